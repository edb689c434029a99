"""Visium HD and Xenium output folders, written in 10x's layouts from simulated cells, read back exactly."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from conftest import write_space_ranger
from spatialdomains import io
from spatialdomains.errors import InputError
from tenx_layouts import MICRONS_PER_PIXEL, XENIUM_CONTROLS, write_visium_hd, write_xenium


@pytest.fixture(scope="module")
def cells():
    return sd.datasets.simulate_cells(1500, 3, 4, 80, seed=3)


@pytest.fixture(scope="module")
def hd_run(cells, tmp_path_factory):
    run = tmp_path_factory.mktemp("hd") / "run1"
    truth = write_visium_hd(cells, run / "outs")
    return run, truth


def _library(adata):
    (name, library), = adata.uns["spatial"].items()
    return name, library


@pytest.mark.parametrize("where", ["run", "outs", "binned_outputs"])
def test_visium_hd_reads_8_um_bins_by_default_from_any_level(hd_run, where):
    run, truth = hd_run
    path = {"run": run, "outs": run / "outs", "binned_outputs": run / "outs" / "binned_outputs"}[where]
    adata = io.read(path)
    assert list(adata.obs_names) == list(truth[8].index)
    name, library = _library(adata)
    assert library["metadata"]["platform"] == "Visium HD" and library["metadata"]["bin_size_um"] == 8
    assert io.coordinate_unit_um(adata) == pytest.approx(MICRONS_PER_PIXEL)


def test_visium_hd_bins_hold_the_cells_counts_at_their_pixel_positions(cells, hd_run):
    run, truth = hd_run
    adata = io.read(run, bin_size=16)
    assert adata.n_obs == len(truth[16]) and adata.X.dtype == np.float32 and sp.issparse(adata.X)
    assert adata.X.sum() == pytest.approx(cells.X.sum())  # every cell's counts are in exactly one bin
    assert list(adata.var_names) == list(cells.var_names) and adata.var["gene_ids"].str.startswith("ENSG").all()
    # Full-resolution pixels (x = column, y = row); bins 16 µm apart on the grid.
    microns = adata.obsm["spatial"] * MICRONS_PER_PIXEL
    steps = np.diff(np.sort(np.unique(np.round(microns[:, 0], 6))))
    assert steps.min() == pytest.approx(16.0)
    assert set(adata.obs) >= {"in_tissue", "array_row", "array_col"}
    scale = io.spatial_scale(adata, adata.obsm["spatial"])
    assert scale["layout"] == "lattice" and scale["median_spacing_um"] == pytest.approx(16.0)
    same = io.read(run / "outs" / "binned_outputs" / "square_016um")
    np.testing.assert_array_equal(same.obsm["spatial"], adata.obsm["spatial"])


def test_visium_hd_cells_take_the_centroids_of_their_outlines(cells, hd_run):
    run, truth = hd_run
    adata = io.read(run, bin_size="cells")
    assert list(adata.obs_names) == list(truth["cells"].index)
    np.testing.assert_allclose(adata.obsm["spatial"] * MICRONS_PER_PIXEL, cells.obsm["spatial"], atol=1e-6)
    assert (adata.X != cells.X).nnz == 0
    assert io.spatial_scale(adata, adata.obsm["spatial"])["layout"] == "irregular"


def test_visium_hd_bin_size_errors_name_the_choices(hd_run):
    run, _ = hd_run
    with pytest.raises(InputError, match=r"bin_size='seven' is not a Visium HD bin size: use 2, 8, 16 or a custom"):
        io.read(run, bin_size="seven")
    with pytest.raises(InputError, match=r"no 7 µm bins .*bin sizes present: 8, 16"):
        io.read(run, bin_size=7)
    with pytest.raises(InputError, match=r"no 2 µm bins .*bin sizes present: 8, 16"):
        io.read(run, bin_size=2)
    with pytest.raises(InputError, match="holds the 16 µm bins"):
        io.read(run / "outs" / "binned_outputs" / "square_016um", bin_size=8)


@pytest.fixture(scope="module")
def hd_custom_run(cells, tmp_path_factory):
    """Space Ranger 3.1 and later: a custom 32 µm bin beside 8 µm, the grid turned 7° on the image, PNGs."""
    run = tmp_path_factory.mktemp("hd_custom") / "run2"
    truth = write_visium_hd(cells, run / "outs", bin_sizes=(8, 32), segmented=False, rotation_deg=7.0, images=True)
    return run, truth


def test_visium_hd_custom_bin_size_is_read_and_listed(hd_custom_run):
    run, truth = hd_custom_run
    adata = io.read(run, bin_size="32um")
    assert list(adata.obs_names) == list(truth[32].index)
    assert _library(adata)[1]["metadata"]["bin_size_um"] == 32
    with pytest.raises(InputError, match=r"no 16 µm bins .*bin sizes present: 8, 32"):
        io.read(run, bin_size=16)


def test_visium_hd_rotated_grid_keeps_its_spacing_in_micrometres(hd_custom_run):
    run, _ = hd_custom_run
    adata = io.read(run, bin_size=32)
    scale = io.spatial_scale(adata, adata.obsm["spatial"])
    assert scale["median_spacing_um"] == pytest.approx(32.0, rel=1e-3)


def test_visium_hd_images_stay_8_bit_in_memory_and_in_the_result(hd_custom_run, tmp_path):
    run, _ = hd_custom_run
    adata = io.read(run)
    images = _library(adata)[1]["images"]
    assert set(images) == {"hires", "lowres"}
    assert all(image.dtype == np.uint8 and image.shape[2] == 3 for image in images.values())
    adata.write_h5ad(tmp_path / "result.h5ad")
    back = io.read(tmp_path / "result.h5ad")
    assert _library(back)[1]["images"]["hires"].dtype == np.uint8


def test_a_bins_own_count_file_is_read_as_visium_hd(hd_custom_run):
    run, truth = hd_custom_run
    adata = io.read(run / "outs" / "binned_outputs" / "square_032um" / "filtered_feature_bc_matrix.h5")
    assert list(adata.obs_names) == list(truth[32].index)
    assert _library(adata)[1]["metadata"]["platform"] == "Visium HD"


def _grid(barcode):
    _, _, row, col = barcode.split("-")[0].split("_")
    return int(row), int(col)


def test_loupe_gets_16_um_domains_on_the_8_um_bins_of_its_file(hd_run, tmp_path):
    run, truth = hd_run
    adata = io.read(run, bin_size=16)
    adata.obs["domain"] = pd.Categorical(truth[16].loc[adata.obs_names].astype(str))
    table = pd.read_csv(io.write_clusters(adata, tmp_path / "clusters.csv"), dtype=str)
    assert list(table.columns) == ["Barcode", "domain"]
    eight = set(io.read(run).obs_names)
    assert set(table["Barcode"]) <= eight and len(table) == len(set(table["Barcode"]))  # only the .cloupe's bins
    parents = {_grid(b): d for b, d in zip(adata.obs_names, adata.obs["domain"].astype(str))}
    for barcode, domain in zip(table["Barcode"], table["domain"]):
        row, col = _grid(barcode)
        assert parents[(row // 2, col // 2)] == domain
    covered = {b for b in eight if (_grid(b)[0] // 2, _grid(b)[1] // 2) in parents}
    assert set(table["Barcode"]) == covered


def test_a_custom_bin_size_keeps_its_own_barcodes_for_its_own_loupe_file(hd_custom_run, tmp_path):
    run, truth = hd_custom_run
    adata = io.read(run, bin_size=32)
    adata.obs["domain"] = truth[32].loc[adata.obs_names].astype(str).to_numpy()
    table = pd.read_csv(io.write_clusters(adata, tmp_path / "clusters.csv"), dtype=str)
    assert list(table["Barcode"]) == list(adata.obs_names)


def test_loupe_gets_the_2_um_majority_of_each_8_um_bin(cells, tmp_path):
    from collections import Counter

    run = tmp_path / "run2um"
    truth = write_visium_hd(cells, run / "outs", bin_sizes=(2, 8), segmented=False)
    adata = io.read(run, bin_size=2)
    adata.obs["domain"] = truth[2].loc[adata.obs_names].astype(str).to_numpy()
    table = pd.read_csv(io.write_clusters(adata, tmp_path / "clusters.csv"), dtype=str).set_index("Barcode")
    children = {}
    for barcode, domain in zip(adata.obs_names, adata.obs["domain"]):
        row, col = _grid(barcode)
        children.setdefault(f"s_008um_{row // 4:05d}_{col // 4:05d}-1", []).append(domain)
    first_seen = {d: i for i, d in enumerate(dict.fromkeys(adata.obs["domain"]))}
    expected = {bin8: min(Counter(v).items(), key=lambda item: (-item[1], first_seen[item[0]]))[0]
                for bin8, v in children.items()}
    assert set(table.index) == set(expected) & set(io.read(run).obs_names)
    assert all(table.loc[b, "domain"] == expected[b] for b in table.index)


@pytest.mark.parametrize("form, table", [("h5", "parquet"), ("mex", "csv")])
def test_xenium_reads_gene_expression_with_centroids_in_microns(cells, tmp_path, form, table):
    bundle = write_xenium(cells, tmp_path / "xenium", form=form, cells_table=table)
    adata = io.read(bundle)
    assert adata.shape == cells.shape and (adata.X != cells.X).nnz == 0
    offset = cells.obsm["spatial"].min(axis=0) - 50.0
    np.testing.assert_allclose(adata.obsm["spatial"], cells.obsm["spatial"] - offset)
    name, library = _library(adata)
    assert name == "region1" and library["metadata"]["coordinate_unit_um"] == 1.0
    assert library["metadata"]["features_left_out"] == XENIUM_CONTROLS
    assert library["metadata"]["panel_name"] == "Simulated panel"
    assert {"transcript_counts", "cell_area", "nucleus_area"} <= set(adata.obs)
    assert io.read(bundle / "experiment.xenium").shape == cells.shape
    assert io.platform(adata) == "Xenium"


def test_xenium_without_manifest_still_reads_with_a_warning(cells, tmp_path, caplog):
    bundle = write_xenium(cells, tmp_path / "xenium")
    (bundle / "experiment.xenium").unlink()
    adata = io.read(bundle)
    assert adata.n_obs == cells.n_obs and "experiment.xenium' is missing" in caplog.text


def test_classic_visium_records_its_unit_from_the_spot_grid(sample, tmp_path):
    """Neighbouring spots are 100 µm apart by design: at 137 pixels between them (as in DLPFC's full-resolution
    image) a pixel is 0.73 µm, whatever spot_diameter_fullres says; without the grid, 10x's 65 µm spot."""
    scaled = sample.copy()
    scaled.obsm["spatial"] = sample.obsm["spatial"] * 1.37 + 500.0  # the simulator's spots: 100 px apart
    write_space_ranger(scaled, tmp_path / "outs")
    adata = io.read(tmp_path)
    assert io.coordinate_unit_um(adata) == pytest.approx(100 / 137)
    assert io.platform(adata) == "Visium"
    factors = adata.uns["spatial"][_library(adata)[0]]["scalefactors"]
    del adata.uns["spatial"][_library(adata)[0]]["metadata"]["coordinate_unit_um"]  # as scanpy reads it: the grid
    assert io.coordinate_unit_um(adata) == pytest.approx(100 / 137)
    adata.obs = adata.obs.drop(columns=["array_row", "array_col"])  # no grid: the scale factors' 65 µm spot
    assert io.coordinate_unit_um(adata) == pytest.approx(65.0 / factors["spot_diameter_fullres"])


@pytest.mark.parametrize("viewer, header", [("loupe", ["Barcode", "domain"]), ("xenium", ["cell_id", "group"])])
def test_write_clusters_in_each_viewers_import_format(sample, tmp_path, viewer, header):
    sample.obs["domain"] = pd.Categorical(np.where(np.arange(sample.n_obs) % 3 == 0, "2", "1"))
    sample.obs.loc[sample.obs_names[:4], "domain"] = np.nan  # spots left out of the analysis
    path = io.write_clusters(sample, tmp_path / "clusters.csv", viewer=viewer)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == header
    table = pd.read_csv(path, dtype=str)
    assert list(table.iloc[:, 0]) == list(sample.obs_names[4:])
    assert list(table.iloc[:, 1]) == list(sample.obs["domain"].iloc[4:].astype(str))


def test_write_clusters_names_a_missing_column(sample, tmp_path):
    with pytest.raises(InputError, match=r"obs\['domain'\] does not exist"):
        io.write_clusters(sample, tmp_path / "clusters.csv")
    assert not (tmp_path / "clusters.csv").exists()


@pytest.mark.parametrize("bin_size, graph", [(16, "radius"), ("cells", "knn")])
def test_spotscape_chooses_its_graph_from_the_layout(hd_run, bin_size, graph):
    run, _ = hd_run
    adata = io.read(run, bin_size=bin_size)
    sd.tl.spotscape(adata, n_epochs=2, n_domains=3, progress=False)
    record = adata.uns["spatialdomains"]["spotscape"]
    assert record["parameters"]["graph"] == graph
    assert record["coordinates"]["platform"] == "Visium HD"
    assert record["coordinates"]["unit_um"] == pytest.approx(MICRONS_PER_PIXEL)


def test_a_samplesheet_bin_size_chooses_the_folder_read(hd_run, tmp_path):
    from spatialdomains.report import batch

    run, _ = hd_run
    sheet = tmp_path / "samples.csv"
    sheet.write_text(f"sample,input,bin_size\nA,{run},16\nB,{run},cells\nC,{run},\n")
    specs = batch.read_samplesheet(sheet)
    assert [spec.inputs[0].rsplit("/", 1)[-1] for spec in specs] == ["square_016um", "segmented_outputs", "run1"]


def test_repeated_or_foreign_ids_are_named(cells, tmp_path):
    from pathlib import Path

    from spatialdomains import _tenx

    with pytest.raises(InputError, match="not of Space Ranger's form 'cellid_000000001-1'"):
        _tenx._cell_numbers(pd.Index(["cellid_000000001-1", "AAAC-1"]), Path("filtered_feature_cell_matrix.h5"))
    outs = tmp_path / "run" / "outs"
    write_visium_hd(cells, outs, bin_sizes=(16,), segmented=False)
    positions = outs / "binned_outputs" / "square_016um" / "spatial" / "tissue_positions.parquet"
    table = pd.read_parquet(positions)
    pd.concat([table, table.iloc[:1]]).to_parquet(positions, index=False)
    with pytest.raises(InputError, match=r"tissue_positions.parquet' lists 1 barcode values more than once"):
        io.read(outs, bin_size=16)
