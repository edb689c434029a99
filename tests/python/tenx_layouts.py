"""10x Genomics output folders written from simulated data, in the layouts 10x documents: a Visium HD Space Ranger
``outs/`` (binned and, for Space Ranger 4, segmented cells) and a Xenium output bundle. The tests read them back
through the package's readers and its command line."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

#: Micrometres per full-resolution pixel of the simulated Visium HD image (a typical value).
MICRONS_PER_PIXEL = 0.2738
XENIUM_CONTROLS = {"Negative Control Probe": 3, "Negative Control Codeword": 2, "Unassigned Codeword": 4}


def write_10x_h5(path: Path, counts, barcodes, names, *, gene_ids=None, feature_types=None,
                 library_id: str = "lib1") -> Path:
    """A feature-barcode matrix in Cell Ranger's HDF5 layout (``matrix/`` with features × barcodes in CSC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = sp.csc_matrix(sp.csr_matrix(counts).T).astype(np.int32)
    n_features = matrix.shape[0]
    gene_ids = gene_ids if gene_ids is not None else [f"ENSG{i:011d}" for i in range(n_features)]
    feature_types = feature_types if feature_types is not None else ["Gene Expression"] * n_features
    with h5py.File(path, "w") as handle:
        handle.attrs["filetype"] = "matrix"
        handle.attrs["version"] = 2
        handle.attrs["library_ids"] = np.array([library_id.encode()])
        group = handle.create_group("matrix")
        group["data"], group["indices"] = matrix.data, matrix.indices.astype(np.int64)
        group["indptr"], group["shape"] = matrix.indptr.astype(np.int64), np.array(matrix.shape, dtype=np.int32)
        group["barcodes"] = np.array([str(b).encode() for b in barcodes])
        features = group.create_group("features")
        features["_all_tag_keys"] = np.array([b"genome"])
        features["genome"] = np.array([b"GRCh38"] * n_features)
        features["id"] = np.array([str(g).encode() for g in gene_ids])
        features["name"] = np.array([str(g).encode() for g in names])
        features["feature_type"] = np.array([t.encode() for t in feature_types])
    return path


def _bins(cells, size_um: int):
    """Sum the cells' counts into square bins of ``size_um``; the bins that hold a cell, with their grid place
    and the planted niche most of their cells belong to."""
    xy = cells.obsm["spatial"]
    origin = xy.min(axis=0)
    col, row = (np.floor((xy - origin) / size_um).astype(int)).T
    keys = row * (col.max() + 1) + col
    unique, which = np.unique(keys, return_inverse=True)
    assign = sp.csr_matrix((np.ones(len(which)), (which, np.arange(len(which)))), shape=(len(unique), len(which)))
    counts = (assign @ sp.csr_matrix(cells.X)).tocsr()
    rows, cols = unique // (col.max() + 1), unique % (col.max() + 1)
    niches = pd.Series(cells.obs["ground_truth"].to_numpy()).groupby(which).agg(lambda v: v.value_counts().index[0])
    centres = origin + (np.stack([cols, rows], axis=1) + 0.5) * size_um
    return counts, rows, cols, centres, niches.to_numpy()


def write_visium_hd(cells, outs: Path, *, bin_sizes=(8, 16), segmented: bool = True, rotation_deg: float = 0.0,
                    images: bool = False) -> dict:
    """A Visium HD ``outs/`` from simulated cells (µm coordinates): ``binned_outputs/square_NNNum/`` per bin size
    (counts summed over the cells in each bin; Space Ranger 3.1's custom size is one more entry, e.g. 32) and,
    with ``segmented``, Space Ranger 4's ``segmented_outputs/`` (each cell with a square outline). The bins' grid
    lies ``rotation_deg`` against the image's pixel axes, as a slide placed at a slight angle does; ``images``
    adds the 8-bit RGB ``tissue_hires_image.png`` and ``tissue_lowres_image.png`` Space Ranger writes. Returns
    the planted niche of each barcode, per bin size and 'cells'."""
    truth = {}
    _write_feature_slice(outs)
    for size in bin_sizes:
        folder = outs / "binned_outputs" / f"square_{size:03d}um"
        counts, rows, cols, centres, niches = _bins(cells, size)
        barcodes = [f"s_{size:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)]
        write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, cells.var_names)
        pixels = _rotated(centres, rotation_deg) / MICRONS_PER_PIXEL
        positions = pa.table({
            "barcode": pa.array(barcodes, pa.string()),
            "in_tissue": pa.array(np.ones(len(barcodes), dtype=np.int32)),
            "array_row": pa.array(rows.astype(np.int32)), "array_col": pa.array(cols.astype(np.int32)),
            "pxl_row_in_fullres": pa.array(pixels[:, 1]), "pxl_col_in_fullres": pa.array(pixels[:, 0])})
        _write_spatial(folder / "spatial", positions, size, pixels if images else None)
        truth[size] = pd.Series(niches, index=barcodes)
    if segmented:
        folder = outs / "segmented_outputs"
        barcodes = [f"cellid_{i + 1:09d}-1" for i in range(cells.n_obs)]
        write_10x_h5(folder / "filtered_feature_cell_matrix.h5", cells.X, barcodes, cells.var_names)
        half = 4.0 / MICRONS_PER_PIXEL
        features = []
        for number, (x, y) in enumerate(cells.obsm["spatial"] / MICRONS_PER_PIXEL, start=1):
            ring = [[x - half, y - half], [x + half, y - half], [x + half, y + half], [x - half, y + half],
                    [x - half, y - half]]
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                             "properties": {"cell_id": number}})
        (folder / "cell_segmentations.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                                       "features": features}))
        _write_spatial(folder / "spatial", None, None)
        truth["cells"] = pd.Series(cells.obs["ground_truth"].to_numpy(), index=barcodes)
    return truth


def _write_feature_slice(outs: Path) -> None:
    """``feature_slice.h5``'s run metadata (the attribute spatialdata-io reads): the HD layout's file format and
    grid transform, as Space Ranger 3 writes them; the per-bin arrays are left out."""
    outs.mkdir(parents=True, exist_ok=True)
    layout = {"file_format": "1.0", "transform": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}
    with h5py.File(outs / "feature_slice.h5", "w") as handle:
        handle.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps(layout)})


def _rotated(xy: np.ndarray, degrees: float) -> np.ndarray:
    """Positions turned by ``degrees`` about the origin (then shifted to stay on the image)."""
    angle = np.deg2rad(degrees)
    turned = xy @ np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    return turned - np.minimum(turned.min(axis=0), 0) + 50.0


def _write_spatial(spatial: Path, positions, size_um, pixels=None) -> None:
    spatial.mkdir(parents=True, exist_ok=True)
    if positions is not None:
        pq.write_table(positions, spatial / "tissue_positions.parquet")
    factors = {"tissue_hires_scalef": 0.05, "tissue_lowres_scalef": 0.015, "fiducial_diameter_fullres": 500.0,
               "regist_target_img_scalef": 0.2, "microns_per_pixel": MICRONS_PER_PIXEL}
    if size_um is not None:
        factors.update(bin_size_um=float(size_um), spot_diameter_fullres=size_um / MICRONS_PER_PIXEL)
    (spatial / "scalefactors_json.json").write_text(json.dumps(factors))
    if pixels is not None:
        _write_tissue_pngs(spatial, pixels, factors)


def _write_tissue_pngs(spatial: Path, pixels: np.ndarray, factors: dict) -> None:
    """Space Ranger's hires and lowres PNGs (8-bit RGB): pink tissue under the bins on a white slide."""
    from PIL import Image

    for resolution in ("hires", "lowres"):
        scale = factors[f"tissue_{resolution}_scalef"]
        shape = np.ceil(pixels.max(axis=0) * scale).astype(int)[::-1] + 20
        picture = np.full((*shape, 3), 250, dtype=np.uint8)
        rows, cols = np.round(pixels[:, 1] * scale).astype(int), np.round(pixels[:, 0] * scale).astype(int)
        picture[rows, cols] = (214, 120, 170)
        Image.fromarray(picture).save(spatial / f"tissue_{resolution}_image.png")


def write_xenium(cells, folder: Path, *, form: str = "h5", cells_table: str = "parquet") -> Path:
    """A Xenium output bundle from simulated cells: ``experiment.xenium``, the cell-feature matrix (``form``:
    'h5' or 'mex', with control probes and codewords as Xenium adds them) and ``cells.parquet`` or
    ``cells.csv.gz``. Cell ids are Xenium's (eight letters and a suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [_xenium_id(i) for i in range(cells.n_obs)]
    names = list(cells.var_names)
    types = ["Gene Expression"] * len(names)
    for kind, number in XENIUM_CONTROLS.items():
        names += [f"{kind.split()[-1]}_{i:04d}" for i in range(number)]
        types += [kind] * number
    controls = sp.csr_matrix(rng.poisson(0.02, size=(cells.n_obs, len(names) - cells.n_vars)))
    counts = sp.hstack([sp.csr_matrix(cells.X), controls]).tocsr()
    gene_ids = [f"ENSG{i:011d}" for i in range(len(names))]
    if form == "h5":
        write_10x_h5(folder / "cell_feature_matrix.h5", counts, ids, names, gene_ids=gene_ids, feature_types=types)
    else:
        mex = folder / "cell_feature_matrix"
        mex.mkdir(exist_ok=True)
        from scipy.io import mmwrite

        with gzip.open(mex / "matrix.mtx.gz", "wb") as handle:
            mmwrite(handle, sp.csc_matrix(counts.T).astype(np.int32))
        pd.DataFrame({"id": gene_ids, "name": names, "type": types}).to_csv(
            mex / "features.tsv.gz", sep="\t", header=False, index=False)
        pd.Series(ids).to_csv(mex / "barcodes.tsv.gz", sep="\t", header=False, index=False)
    xy = cells.obsm["spatial"] - cells.obsm["spatial"].min(axis=0) + 50.0
    totals = np.asarray(counts.sum(axis=1)).ravel()
    table = pd.DataFrame({"cell_id": ids, "x_centroid": xy[:, 0], "y_centroid": xy[:, 1],
                          "transcript_counts": np.asarray(cells.X.sum(axis=1)).ravel().astype(np.int64),
                          "control_probe_counts": (totals - np.asarray(cells.X.sum(axis=1)).ravel()).astype(np.int64),
                          "total_counts": totals.astype(np.int64), "cell_area": rng.uniform(40, 120, cells.n_obs),
                          "nucleus_area": rng.uniform(10, 40, cells.n_obs)})
    if cells_table == "parquet":
        table.to_parquet(folder / "cells.parquet", index=False)
    else:
        table.to_csv(folder / "cells.csv.gz", index=False)
    manifest = {"major_version": 5, "minor_version": 0, "run_name": "simulated run", "region_name": "region1",
                "panel_name": "Simulated panel", "panel_organism": "Human", "pixel_size": 0.2125,
                "analysis_sw_version": "xenium-3.0.0.15", "num_cells": cells.n_obs}
    (folder / "experiment.xenium").write_text(json.dumps(manifest, indent=2))
    return folder


def _xenium_id(number: int) -> str:
    """Xenium's cell id: the number in base 16 written with the letters a-p, eight long, then '-1'."""
    letters = "".join("abcdefghijklmnop"[int(d, 16)] for d in f"{number:08x}")
    return f"{letters}-1"
