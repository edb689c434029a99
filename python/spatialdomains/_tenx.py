"""10x Genomics output folders: Visium (Space Ranger), Visium HD (bins, and Space Ranger 4's segmented cells) and
Xenium (Xenium Onboard Analysis).

Each reader returns an AnnData in the scanpy/squidpy layout (``obsm['spatial']``, ``uns['spatial'][library_id]``
with ``images``, ``scalefactors`` and ``metadata``). ``metadata`` names the platform and ``coordinate_unit_um``,
the micrometres per ``obsm['spatial']`` unit (full-resolution pixels for Visium, micrometres for Xenium), so that
distances mean the same on every platform. Only 'Gene Expression' features are kept; the others (Xenium's control
probes and codewords, say) are counted in ``metadata['features_left_out']``. Files are only read.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError, option

logger = logging.getLogger("spatialdomains")

COUNT_FILE = "filtered_feature_bc_matrix.h5"
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
#: Neighbouring Visium spots are 100 µm apart, centre to centre, by design; in a row they are two array columns
#: apart. Fitted to the spots' array grid, this gives a classic Visium run's micrometres per full-resolution pixel.
VISIUM_SPOT_SPACING_UM = 100.0
#: Space Ranger's ``spot_diameter_fullres`` is the pixel span of a theoretical 65 µm spot (its documentation): the
#: unit when the array grid is not known.
VISIUM_SCALEFACTOR_SPOT_UM = 65.0

HD_BINNED = "binned_outputs"
HD_SEGMENTED = "segmented_outputs"
HD_POSITIONS = "tissue_positions.parquet"
HD_CELL_COUNT_FILE = "filtered_feature_cell_matrix.h5"
HD_CELL_SHAPES = "cell_segmentations.geojson"
#: The bin sizes Space Ranger always writes, in µm; Space Ranger 3.1 and later can add one custom size
#: (``square_NNNum``, any whole number of µm), and ``"cells"`` reads Space Ranger 4's segmented cells instead.
HD_BIN_SIZES = (2, 8, 16)
#: 8 µm bins, as the 10x and scverse tools default to: about one cell, and a few hundred thousand bins per section.
HD_DEFAULT_BIN_SIZE = 8
_BIN_FOLDER = re.compile(r"^square_(\d{3})um$")
#: Of the bin sizes Space Ranger always writes, only the 8 µm bins get a Loupe Browser file (as do a custom bin
#: size and the segmented cells); the 2 and 16 µm bins' domains go into the 8 µm file.
HD_LOUPE_BIN_SIZE = 8
#: A Visium HD bin's barcode: its size, grid row and column (``s_016um_00012_00034-1``).
_HD_BARCODE = re.compile(r"^s_(\d{3})um_(\d{5})_(\d{5})(-\d+)?$")

XENIUM_MANIFEST = "experiment.xenium"
XENIUM_COUNT_FILE = "cell_feature_matrix.h5"
XENIUM_COUNT_FOLDER = "cell_feature_matrix"
XENIUM_CELL_TABLES = ("cells.parquet", "cells.csv.gz")
XENIUM_CELL_COLUMNS = ("cell_id", "x_centroid", "y_centroid")
#: Per-cell numbers of cells.parquet kept in ``obs`` (quality control), when present.
XENIUM_CELL_QC = ("transcript_counts", "control_probe_counts", "control_codeword_counts",
                  "unassigned_codeword_counts", "total_counts", "cell_area", "nucleus_area")


def platform_of(folder: Path) -> str | None:
    """'visium_hd', 'xenium' or 'visium' for a folder holding (or inside) that platform's output, else None."""
    candidates = [folder, folder / "outs"]
    for candidate in candidates:
        if (candidate / HD_BINNED).is_dir() or (candidate / HD_SEGMENTED).is_dir() or _BIN_FOLDER.match(
                candidate.name) or candidate.name in (HD_BINNED, HD_SEGMENTED):
            return "visium_hd"
    if (folder / XENIUM_MANIFEST).is_file() or (folder / XENIUM_COUNT_FILE).is_file() or any(
            (folder / name).is_file() for name in XENIUM_CELL_TABLES):
        return "xenium"
    if any((candidate / COUNT_FILE).exists() or (candidate / "spatial").is_dir() for candidate in candidates):
        return "visium"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Visium (Space Ranger)
# ---------------------------------------------------------------------------------------------------------------

def read_visium(folder: str | Path, *, library_id: str | None = None, load_images: bool = True) -> ad.AnnData:
    """Read a Space Ranger output folder (``outs/`` or the folder that contains it).

    Expects ``filtered_feature_bc_matrix.h5`` and ``spatial/`` with ``tissue_positions.csv`` (Space Ranger ≥ 2,
    with header) or ``tissue_positions_list.csv`` (older, no header), ``scalefactors_json.json`` and the
    hires/lowres PNG images. Gene symbols become ``var_names`` (made unique) and Ensembl IDs go to
    ``var['gene_ids']``.
    """
    folder = Path(folder)
    if not (folder / COUNT_FILE).exists() and (folder / "outs" / COUNT_FILE).exists():
        folder = folder / "outs"
    count_file = folder / COUNT_FILE
    if not count_file.exists():
        raise InputError(f"Space Ranger folder '{folder}' has no {COUNT_FILE}: point to the run's outs/ folder")
    spatial_dir = folder / "spatial"
    if not spatial_dir.is_dir():
        raise InputError(f"Space Ranger folder '{folder}' has no spatial/ folder: it is needed for spot positions")
    adata, left_out = read_10x_h5(count_file)
    positions = _read_positions(spatial_dir)
    _place(adata, positions, spatial_dir / "tissue_positions.csv", COUNT_FILE)
    scalefactors = _scalefactors(spatial_dir)
    unit = visium_microns_per_pixel(adata.obs["array_row"], adata.obs["array_col"], adata.obsm["spatial"],
                                    scalefactors)
    _library(adata, library_id or adata.uns.pop("library_id", None) or folder.resolve().name,
             images=_images(spatial_dir) if load_images else {}, scalefactors=scalefactors,
             metadata={"platform": "Visium", "source": COUNT_FILE, "coordinate_unit_um": unit,
                       "features_left_out": left_out})
    return adata


def visium_microns_per_pixel(array_rows, array_cols, coordinates, scalefactors: dict | None = None) -> float | None:
    """Micrometres per full-resolution pixel of a classic Visium run, from its spots' array grid (neighbours in a
    row are two columns and 100 µm apart); without a grid that fits, 65 µm over the scale factors'
    ``spot_diameter_fullres``; None without either."""
    unit = grid_microns_per_pixel(array_rows, array_cols, coordinates, VISIUM_SPOT_SPACING_UM / 2)
    if unit is not None:
        return unit
    diameter = (scalefactors or {}).get("spot_diameter_fullres")
    return VISIUM_SCALEFACTOR_SPOT_UM / float(diameter) if diameter else None


def grid_microns_per_pixel(array_rows, array_cols, coordinates, column_step_um: float) -> float | None:
    """Micrometres per pixel from an array grid whose columns are ``column_step_um`` apart (50 µm for classic
    Visium, the bin size for Visium HD): an affine fit of pixel positions to (array row, array column). None when
    fewer than three positions span the grid or the positions do not follow it."""
    rows, cols = np.asarray(array_rows, dtype=np.float64), np.asarray(array_cols, dtype=np.float64)
    pixels = np.asarray(coordinates, dtype=np.float64)[:, :2]
    known = np.isfinite(rows) & np.isfinite(cols) & np.isfinite(pixels).all(axis=1)
    design = np.column_stack([rows[known], cols[known], np.ones(int(known.sum()))])
    if len(design) < 3 or np.linalg.matrix_rank(design) < 3:
        return None
    fit = np.linalg.lstsq(design, pixels[known], rcond=None)[0]
    step = float(np.linalg.norm(fit[1]))  # pixels from one array column to the next
    off_grid = np.median(np.linalg.norm(design @ fit - pixels[known], axis=1))
    return column_step_um / step if step > 0 and off_grid < 0.2 * step else None


def _read_positions(spatial_dir: Path) -> pd.DataFrame:
    with_header = spatial_dir / "tissue_positions.csv"
    without_header = spatial_dir / "tissue_positions_list.csv"
    if with_header.exists():
        positions = pd.read_csv(with_header)
        if list(positions.columns[:6]) != POSITION_COLUMNS:
            positions = pd.read_csv(with_header, header=None, names=POSITION_COLUMNS)
    elif without_header.exists():
        positions = pd.read_csv(without_header, header=None, names=POSITION_COLUMNS)
    else:
        raise InputError(
            f"'{spatial_dir}' has neither tissue_positions.csv nor tissue_positions_list.csv: spot positions are needed"
        )
    return positions.set_index("barcode")


def _place(adata: ad.AnnData, positions: pd.DataFrame, positions_file: Path, count_name: str) -> None:
    """Put each barcode's array position and full-resolution pixel (x, y) into ``obs`` and ``obsm['spatial']``."""
    positions.index = positions.index.astype(str)
    _refuse_duplicates(positions.index, positions_file, "barcode")
    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        raise InputError(
            f"{len(missing)} of the {adata.n_obs} barcodes of {count_name} (e.g. '{missing[0]}') are not in "
            f"the tissue positions file '{positions_file}': the two files come from different runs or bin sizes; copy both from one run"
        )
    positions = positions.loc[adata.obs_names]
    for column in ("in_tissue", "array_row", "array_col"):
        adata.obs[column] = positions[column].to_numpy()
    adata.obsm["spatial"] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Visium HD
# ---------------------------------------------------------------------------------------------------------------

def read_visium_hd(path: str | Path, *, bin_size: int | str | None = None, library_id: str | None = None,
                   load_images: bool = True) -> ad.AnnData:
    """Read a Visium HD Space Ranger output: one bin size of ``binned_outputs/``, or the segmented cells.

    ``path``: the run folder, its ``outs/``, ``binned_outputs/``, one ``square_NNNum`` folder, or Space Ranger 4's
    ``segmented_outputs/``. ``bin_size``: 2, 8, 16 or a custom size (µm; default 8, or the bin folder given) or ``"cells"``
    (``segmented_outputs/``: cell centroids from ``cell_segmentations.geojson``). Coordinates are full-resolution
    pixels; ``metadata['coordinate_unit_um']`` is the scale factors' ``microns_per_pixel``.
    """
    folder = visium_hd_folder(path, bin_size)
    if folder.name == HD_SEGMENTED:
        return _read_hd_cells(folder, library_id, load_images)
    return _read_hd_bins(folder, int(_BIN_FOLDER.match(folder.name).group(1)), library_id, load_images)


def visium_hd_folder(path: str | Path, bin_size: int | str | None = None) -> Path:
    """The folder of a Visium HD output that holds ``bin_size`` (a ``square_NNNum`` folder, or
    ``segmented_outputs`` for ``"cells"``); an error naming the sizes present when it is not there."""
    path = Path(path)
    size = _bin_size(bin_size)
    bin_match = _BIN_FOLDER.match(path.name)
    if bin_match:
        found = int(bin_match.group(1))
        if size not in (None, found):
            raise InputError(f"'{path}' holds the {found} µm bins, but {option('bin_size', size)} was asked for: "
                             f"point to the folder above binned_outputs/ to choose a bin size")
        return path
    if path.name == HD_SEGMENTED:
        if size not in (None, "cells"):
            raise InputError(f"'{path}' holds segmented cells, not bins: leave out {option('bin_size')} or give "
                             f"{option('bin_size', 'cells')}")
        return path
    outs = path.parent if path.name == HD_BINNED else path
    if not (outs / HD_BINNED).is_dir() and not (outs / HD_SEGMENTED).is_dir() and (outs / "outs").is_dir():
        outs = outs / "outs"
    size = HD_DEFAULT_BIN_SIZE if size is None else size
    if size == "cells":
        if not (outs / HD_SEGMENTED).is_dir():
            raise InputError(f"'{outs}' has no {HD_SEGMENTED}/ folder: segmented cells come from Space Ranger 4 and "
                             f"later; use a bin size ({option('bin_size', HD_DEFAULT_BIN_SIZE)})")
        return outs / HD_SEGMENTED
    binned = outs / HD_BINNED
    folder = binned / f"square_{size:03d}um"
    if not folder.is_dir():
        present = sorted(int(m.group(1)) for p in (binned.iterdir() if binned.is_dir() else [])
                         if (m := _BIN_FOLDER.match(p.name)))
        sizes = ", ".join(map(str, present)) or "none"
        raise InputError(f"Visium HD folder '{outs}' has no {size} µm bins ({HD_BINNED}/square_{size:03d}um/; bin "
                         f"sizes present: {sizes}): choose one of them with {option('bin_size')}")
    return folder


def _bin_size(value) -> int | str | None:
    """The bin size asked for: None, a whole number of µm (2, 8, 16 or a custom size), or 'cells'; anything
    else is an error naming the choices. Whether the run holds that size is checked against its folders."""
    if value is None or value == "cells":
        return value
    try:
        size = int(str(value).strip().removesuffix("um").removesuffix("µm"))
    except ValueError:
        size = None
    if size is None or not 1 <= size <= 999:
        raise InputError(f"{option('bin_size', value)} is not a Visium HD bin size: use "
                         f"{', '.join(map(str, HD_BIN_SIZES))} or a custom size of the run (whole µm, as in its "
                         "square_NNNum folder), or 'cells' (Space Ranger 4's segmented cells)")
    return size


def _read_hd_bins(folder: Path, size: int, library_id: str | None, load_images: bool) -> ad.AnnData:
    count_file = folder / COUNT_FILE
    if not count_file.is_file():
        raise InputError(f"Visium HD bin folder '{folder}' has no {COUNT_FILE}: copy the whole square_"
                         f"{size:03d}um/ folder from the Space Ranger run")
    spatial_dir = folder / "spatial"
    positions_file = spatial_dir / HD_POSITIONS
    if not positions_file.is_file():
        raise InputError(f"Visium HD bin folder '{folder}' has no spatial/{HD_POSITIONS}: the bins' positions "
                         "are needed; copy the bin folder's spatial/ from the Space Ranger run")
    adata, left_out = read_10x_h5(count_file)
    positions = read_parquet(positions_file, POSITION_COLUMNS)
    _place(adata, positions.set_index("barcode"), positions_file, f"{folder.name}/{COUNT_FILE}")
    scalefactors = _scalefactors(spatial_dir)
    _library(adata, library_id or adata.uns.pop("library_id", None) or run_name(folder),
             images=_images(spatial_dir) if load_images else {}, scalefactors=scalefactors,
             metadata={"platform": "Visium HD", "bin_size_um": size, "source": f"{folder.name}/{COUNT_FILE}",
                       "coordinate_unit_um": _microns_per_pixel(scalefactors, spatial_dir),
                       "features_left_out": left_out, "binned_outputs": str(folder.resolve().parent)})
    return adata


def loupe_bins(barcodes, labels, size_um: int, binned_outputs: str | None = None) -> pd.DataFrame:
    """Domains of ``size_um`` bins (2 or 16) as the 8 µm bins of Loupe Browser's file: a larger bin's domain for each 8 µm
    bin it covers (the grids nest: 16 µm bin (r, c) holds 8 µm bins (2r..2r+1, 2c..2c+1)), a smaller bins'
    majority for the 8 µm bin holding them (ties: the domain first in order). With ``binned_outputs`` only the
    8 µm bins of the run's filtered matrix (those in the .cloupe) are listed. Columns: barcode, label."""
    import h5py

    parts = pd.Series(list(barcodes)).str.extract(_HD_BARCODE)
    if parts.isna()[[0, 1, 2]].any().any():
        raise InputError(f"the {size_um} µm bins' barcodes are not Space Ranger's (s_{size_um:03d}um_ROW_COL), so they "
                         "cannot be placed on Loupe Browser's 8 µm bins: write them for another viewer, or read the "
                         "run at 8 µm")
    rows, cols = parts[1].astype(int).to_numpy(), parts[2].astype(int).to_numpy()
    suffix = parts[3].fillna("").to_numpy()
    labels = pd.Series(np.asarray(labels, dtype=object))
    if size_um >= HD_LOUPE_BIN_SIZE:
        k = size_um // HD_LOUPE_BIN_SIZE
        offsets = [(i, j) for i in range(k) for j in range(k)]
        table = pd.DataFrame({
            "barcode": [f"s_008um_{r * k + i:05d}_{c * k + j:05d}{x}" for r, c, x in zip(rows, cols, suffix)
                        for i, j in offsets],
            "label": np.repeat(labels.to_numpy(), len(offsets))})
    else:
        k = HD_LOUPE_BIN_SIZE // size_um
        parent = pd.Series([f"s_008um_{r // k:05d}_{c // k:05d}{x}" for r, c, x in zip(rows, cols, suffix)])
        order = {label: rank for rank, label in enumerate(pd.unique(labels))}
        counts = pd.DataFrame({"barcode": parent, "label": labels}).value_counts().rename("n").reset_index()
        counts["rank"] = counts["label"].map(order)
        counts = counts.sort_values(["barcode", "n", "rank"], ascending=[True, False, True], kind="stable")
        table = counts.drop_duplicates("barcode")[["barcode", "label"]].reset_index(drop=True)
    eight = Path(binned_outputs or "") / f"square_{HD_LOUPE_BIN_SIZE:03d}um" / COUNT_FILE
    if binned_outputs and eight.is_file():
        with h5py.File(eight, "r") as handle:
            present = set(_strings(handle["matrix"]["barcodes"][:]))
        table = table[table["barcode"].isin(present)].reset_index(drop=True)
    return table


def _read_hd_cells(folder: Path, library_id: str | None, load_images: bool) -> ad.AnnData:
    """Space Ranger 4's segmented cells: counts per cell, and each cell's centroid from its outline."""
    count_file, shapes_file = folder / HD_CELL_COUNT_FILE, folder / HD_CELL_SHAPES
    for needed in (count_file, shapes_file):
        if not needed.is_file():
            raise InputError(f"Visium HD segmented folder '{folder}' has no {needed.name}: copy the whole "
                             f"{HD_SEGMENTED}/ folder from the Space Ranger run")
    adata, left_out = read_10x_h5(count_file)
    centroids = _cell_centroids(shapes_file)
    numbers = _cell_numbers(adata.obs_names, count_file)
    missing = ~np.isin(numbers, centroids.index.to_numpy())
    if missing.any():
        raise InputError(f"{int(missing.sum())} of the {adata.n_obs} cells of {HD_CELL_COUNT_FILE} (e.g. "
                         f"'{adata.obs_names[missing][0]}') have no outline in '{shapes_file}': the two files come "
                         "from different runs; copy both from one run")
    adata.obsm["spatial"] = centroids.loc[numbers].to_numpy(dtype=np.float64)
    spatial_dir = folder / "spatial"
    scalefactors = _scalefactors(spatial_dir)
    _library(adata, library_id or adata.uns.pop("library_id", None) or run_name(folder),
             images=_images(spatial_dir) if load_images else {}, scalefactors=scalefactors,
             metadata={"platform": "Visium HD", "bin_size_um": "cells", "source": f"{HD_SEGMENTED}/{HD_CELL_COUNT_FILE}",
                       "coordinate_unit_um": _microns_per_pixel(scalefactors, spatial_dir),
                       "features_left_out": left_out})
    return adata


def run_name(path: Path) -> str:
    """The name of a path; for a folder inside a Space Ranger output (``outs/``, a bin folder, ...) the run's
    name, that of the folder above ``outs/``."""
    path = Path(path)
    if not _inside_run(path):
        return path.name
    path = path.resolve()
    while _inside_run(path) and path.parent != path:
        path = path.parent
    return path.name


def _inside_run(path: Path) -> bool:
    return bool(_BIN_FOLDER.match(path.name)) or path.name in (HD_BINNED, HD_SEGMENTED, "outs")


def _cell_numbers(barcodes: pd.Index, count_file: Path) -> np.ndarray:
    """The integer of each cell barcode ('cellid_000000042-1' → 42), as the outlines' ``cell_id`` holds it."""
    numbers = barcodes.str.extract(r"^cellid_(\d+)-\d+$", expand=False)
    if numbers.isna().any():
        bad = barcodes[np.asarray(numbers.isna())][0]
        raise InputError(f"'{count_file}' has cell barcode '{bad}', not of Space Ranger's form 'cellid_000000001-1': "
                         "give the segmented_outputs/ folder of a Space Ranger 4 run")
    return numbers.astype(np.int64).to_numpy()


def _cell_centroids(path: Path) -> pd.DataFrame:
    """Area centroid (x, y) of each outline of a GeoJSON FeatureCollection, indexed by its ``cell_id``."""
    try:
        collection = json.loads(path.read_text())
        features = collection["features"]
        ids = np.array([int(feature["properties"]["cell_id"]) for feature in features], dtype=np.int64)
        centres = np.array([_polygon_centroid(feature["geometry"]) for feature in features], dtype=np.float64)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise InputError(f"'{path}' is not a GeoJSON FeatureCollection of cell outlines with a 'cell_id' property "
                         f"({type(error).__name__}: {error}): copy it again from the Space Ranger run") from None
    centroids = pd.DataFrame(centres.reshape(-1, 2), index=ids, columns=["x", "y"])
    _refuse_duplicates(centroids.index, path, "cell_id")
    return centroids


def _polygon_centroid(geometry: dict) -> tuple[float, float]:
    """Centroid of a Polygon's outer ring (of the largest part of a MultiPolygon), by the shoelace formula."""
    rings = geometry["coordinates"]
    if geometry["type"] == "MultiPolygon":
        rings = max(rings, key=lambda polygon: abs(_ring_area(np.asarray(polygon[0], dtype=np.float64))))
    ring = np.asarray(rings[0], dtype=np.float64)[:, :2]
    area = _ring_area(ring)
    if abs(area) < 1e-12:
        x, y = ring.mean(axis=0)
        return float(x), float(y)
    x, y, x_next, y_next = ring[:, 0], ring[:, 1], np.roll(ring[:, 0], -1), np.roll(ring[:, 1], -1)
    cross = x * y_next - x_next * y
    return float(((x + x_next) * cross).sum() / (6 * area)), float(((y + y_next) * cross).sum() / (6 * area))


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(0.5 * (x * np.roll(y, -1) - np.roll(x, -1) * y).sum())


def _refuse_duplicates(ids: pd.Index, path: Path, field: str) -> None:
    if not ids.is_unique:
        repeated = ids[ids.duplicated()]
        raise InputError(f"'{path}' lists {len(repeated)} {field} values more than once (e.g. '{repeated[0]}'): the "
                         "file is damaged or two runs were joined; copy it again from one run")


def _microns_per_pixel(scalefactors: dict, spatial_dir: Path) -> float | None:
    value = scalefactors.get("microns_per_pixel")
    if value is None:
        logger.warning("'%s' has no microns_per_pixel: distances are given in pixels only", spatial_dir /
                       "scalefactors_json.json")
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# Xenium
# ---------------------------------------------------------------------------------------------------------------

def read_xenium(path: str | Path, *, library_id: str | None = None) -> ad.AnnData:
    """Read a Xenium Onboard Analysis output folder (or its ``experiment.xenium``): cells × genes with centroids.

    Counts come from ``cell_feature_matrix.h5`` (or the ``cell_feature_matrix/`` MEX folder); centroids
    (``x_centroid``, ``y_centroid``, in µm) and per-cell quality numbers from ``cells.parquet`` (or
    ``cells.csv.gz``). ``experiment.xenium`` gives the panel, software version and pixel size for the record.
    Control probes and codewords are left out and counted in ``metadata['features_left_out']``.
    """
    path = Path(path)
    folder = path.parent if path.name == XENIUM_MANIFEST else path
    manifest = _xenium_manifest(folder / XENIUM_MANIFEST)
    if (folder / XENIUM_COUNT_FILE).is_file():
        adata, left_out = read_10x_h5(folder / XENIUM_COUNT_FILE)
        source = XENIUM_COUNT_FILE
    elif (folder / XENIUM_COUNT_FOLDER).is_dir():
        adata, left_out = read_10x_mex(folder / XENIUM_COUNT_FOLDER)
        source = f"{XENIUM_COUNT_FOLDER}/"
    else:
        raise InputError(f"Xenium folder '{folder}' has neither {XENIUM_COUNT_FILE} nor {XENIUM_COUNT_FOLDER}/: the "
                         "cell-feature matrix is needed; copy it from the Xenium output bundle")
    cells_file = next((folder / name for name in XENIUM_CELL_TABLES if (folder / name).is_file()), None)
    if cells_file is None:
        raise InputError(f"Xenium folder '{folder}' has no cells table ({' or '.join(XENIUM_CELL_TABLES)}): the "
                         "cell centroids are needed; copy it from the Xenium output bundle")
    if cells_file.suffix == ".parquet":
        cells = read_parquet(cells_file, XENIUM_CELL_COLUMNS)
    else:
        cells = _read_csv_columns(cells_file, XENIUM_CELL_COLUMNS)
    cells["cell_id"] = [c.decode() if isinstance(c, bytes) else str(c) for c in cells["cell_id"]]
    cells = cells.set_index("cell_id")
    _refuse_duplicates(cells.index, cells_file, "cell_id")
    missing = adata.obs_names.difference(cells.index)
    if len(missing):
        raise InputError(f"{len(missing)} of the {adata.n_obs} cells of {source} (e.g. '{missing[0]}') are not in "
                         f"'{cells_file}': the files come from different runs or regions; copy both from one bundle")
    cells = cells.loc[adata.obs_names]
    coordinates = cells[["x_centroid", "y_centroid"]].to_numpy(dtype=np.float64)
    for column in XENIUM_CELL_QC:
        if column in cells:
            adata.obs[column] = cells[column].to_numpy()
    adata.obsm["spatial"] = coordinates
    metadata = {"platform": "Xenium", "source": source, "coordinate_unit_um": 1.0, "features_left_out": left_out,
                **{key: manifest[key] for key in ("panel_name", "panel_organism", "analysis_sw_version",
                                                  "pixel_size", "region_name", "run_name") if key in manifest}}
    name = library_id or manifest.get("region_name") or folder.resolve().name
    _library(adata, str(name), images={}, scalefactors={}, metadata=metadata)
    return adata


def _xenium_manifest(path: Path) -> dict:
    if not path.is_file():
        logger.warning("'%s' is missing: the panel and software version are not recorded (coordinates are "
                       "taken as µm, as Xenium writes them)", path)
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"'{path}' is not valid JSON ({error}): copy it again from the Xenium output bundle") from None
    if not isinstance(manifest, dict):
        raise InputError(f"'{path}' must hold a JSON object (Xenium's experiment manifest)")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------

def read_10x_h5(path: Path) -> tuple[ad.AnnData, dict[str, int]]:
    """A 10x feature-barcode matrix (HDF5, Cell Ranger ≥ 3 layout) with its 'Gene Expression' features, and the
    number of features of each other type left out."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "matrix" not in handle:
                raise InputError(f"'{path}' is not a 10x feature-barcode matrix (no 'matrix' group)")
            group = handle["matrix"]
            n_features, n_barcodes = (int(v) for v in group["shape"][:])
            matrix = sp.csc_matrix((group["data"][:], group["indices"][:], group["indptr"][:]),
                                   shape=(n_features, n_barcodes))
            barcodes = _strings(group["barcodes"][:])
            features = group["features"]
            gene_ids, names = _strings(features["id"][:]), _strings(features["name"][:])
            feature_types = _strings(features["feature_type"][:])
            library_ids = handle.attrs.get("library_ids")
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as error:  # an empty, truncated or foreign HDF5 file
        raise InputError(f"'{path}' is not a readable 10x feature-barcode matrix ({str(error).splitlines()[0]}): "
                         "copy it again from the run's output folder") from None
    adata, left_out = _gene_expression(matrix.T.tocsr(), barcodes, gene_ids, names, feature_types, path)
    if library_ids is not None and len(library_ids):
        value = library_ids[0]
        adata.uns["library_id"] = value.decode() if isinstance(value, bytes) else str(value)
    return adata, left_out


def read_10x_mex(folder: Path) -> tuple[ad.AnnData, dict[str, int]]:
    """A 10x feature-barcode matrix in Matrix Market form (``matrix.mtx.gz``, ``features.tsv.gz``,
    ``barcodes.tsv.gz``)."""
    from scipy.io import mmread

    files = {name: folder / f"{name}.gz" for name in ("matrix.mtx", "features.tsv", "barcodes.tsv")}
    for file in files.values():
        if not file.is_file():
            raise InputError(f"'{folder}' has no {file.name}: a 10x matrix folder holds matrix.mtx.gz, "
                             "features.tsv.gz and barcodes.tsv.gz")
    try:
        with gzip.open(files["matrix.mtx"], "rb") as handle:
            matrix = sp.csr_matrix(mmread(handle).T)
        features = pd.read_csv(files["features.tsv"], sep="\t", header=None, dtype=str)
        barcodes = pd.read_csv(files["barcodes.tsv"], sep="\t", header=None, dtype=str)[0].tolist()
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"'{folder}' is not a readable 10x matrix folder ({str(error).splitlines()[0]}): copy it "
                         "again from the run's output folder") from None
    if features.shape[1] < 3 or matrix.shape != (len(barcodes), len(features)):
        raise InputError(f"'{folder}': matrix.mtx.gz is {matrix.shape[1]} features × {matrix.shape[0]} barcodes but "
                         f"features.tsv.gz lists {len(features)} (with {features.shape[1]} columns; 3 expected: id, "
                         f"name, type) and barcodes.tsv.gz {len(barcodes)}")
    return _gene_expression(matrix, barcodes, features[0].tolist(), features[1].tolist(), features[2].tolist(),
                            folder)


def _gene_expression(counts: sp.csr_matrix, barcodes, gene_ids, names, feature_types, where: Path):
    types = np.asarray(feature_types)
    keep = types == "Gene Expression"
    if not keep.any():
        found = ", ".join(sorted(set(types))) or "none"
        raise InputError(f"'{where}' has no 'Gene Expression' features (feature types: {found}): spatial domains "
                         "are found from gene expression; give the run's gene-expression matrix")
    kinds, numbers = np.unique(types[~keep], return_counts=True)
    left_out = {str(kind): int(number) for kind, number in zip(kinds, numbers)}
    if left_out:
        logger.info("left out %s (only 'Gene Expression' features are used)",
                    ", ".join(f"{number} {kind} features" for kind, number in left_out.items()))
    var = pd.DataFrame({"gene_ids": np.asarray(gene_ids)[keep], "feature_types": "Gene Expression"},
                       index=pd.Index(np.asarray(names)[keep]))
    adata = ad.AnnData(X=counts[:, keep].astype(np.float32), obs=pd.DataFrame(index=pd.Index(barcodes)), var=var)
    adata.var_names_make_unique()
    return adata, left_out


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_parquet(path: Path, columns) -> pd.DataFrame:
    """A Parquet table with at least ``columns``; a missing column or an unreadable file is an error naming it."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:  # a dependency of the package; only a broken install lacks it
        raise InputError(f"reading '{path}' needs pyarrow: pip install pyarrow") from None
    try:
        schema = parquet.read_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InputError(f"'{path}' lacks the column(s) {', '.join(missing)} (columns found: "
                             f"{', '.join(schema.names)}): copy the file again from the run's output folder")
        return parquet.read_table(path).to_pandas()
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged or foreign file
        raise InputError(f"'{path}' is not a readable Parquet file ({str(error).splitlines()[0]}): copy it again "
                         "from the run's output folder") from None


def _read_csv_columns(path: Path, columns) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, EOFError, pd.errors.ParserError) as error:
        raise InputError(f"'{path}' is not a readable CSV file ({str(error).splitlines()[0]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"'{path}' lacks the column(s) {', '.join(missing)} (columns found: "
                         f"{', '.join(map(str, table.columns))})")
    return table


def _scalefactors(spatial_dir: Path) -> dict:
    path = spatial_dir / "scalefactors_json.json"
    if not path.exists():
        return {}
    try:
        factors = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"'{path}' is not valid JSON ({error}): copy it again from the Space Ranger run, or "
                         "remove it to go on without scale factors (then no tissue image is used)") from None
    if not isinstance(factors, dict):
        raise InputError(f"'{path}' must hold a JSON object of scale factors, not {type(factors).__name__}")
    return factors


def _images(spatial_dir: Path) -> dict:
    return {resolution: _read_png(spatial_dir / f"tissue_{resolution}_image.png")
            for resolution in ("hires", "lowres") if (spatial_dir / f"tissue_{resolution}_image.png").exists()}


def _read_png(path: Path) -> np.ndarray:
    """A Space Ranger PNG as RGB uint8 (as written: a quarter of the memory of floats, in every output too)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert("RGB"))
    except (OSError, ValueError, UnidentifiedImageError) as error:
        raise InputError(f"'{path}' is not a readable PNG image ({str(error).splitlines()[0]}): copy it again "
                         "from the Space Ranger run, or remove it to go on without the tissue image") from None


def _library(adata: ad.AnnData, library_id: str, *, images: dict, scalefactors: dict, metadata: dict) -> None:
    adata.uns.pop("library_id", None)
    known = {key: value for key, value in metadata.items() if value is not None}  # h5ad cannot store None
    adata.uns["spatial"] = {library_id: {"images": images, "scalefactors": scalefactors, "metadata": known}}
