"""SpatialData stores: a table read with positions from the shapes it annotates, results written to a new store."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd
import pytest

import spatialdomains as sd
from spatialdomains import io
from spatialdomains.errors import InputError

spatialdata = pytest.importorskip("spatialdata", reason="the spatialdata package (extra 'spatialdata') is not installed")


def _store(path, adata, *, with_image=True, tables=("table",)):
    """A SpatialData store: spots as circles, their table (without obsm['spatial']) and an image scaled 8×."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale

    xy = adata.obsm["spatial"]
    shapes = ShapesModel.parse(xy, geometry=0, radius=np.full(len(xy), 30.0), index=np.arange(len(xy)))
    table = adata.copy()
    del table.obsm["spatial"]
    table.obs["region"], table.obs["spot_id"] = "spots", np.arange(table.n_obs)
    table.obsm["extra"] = np.arange(table.n_obs * 2, dtype=np.float32).reshape(-1, 2)
    parsed = {name: TableModel.parse(table.copy(), region="spots", region_key="region", instance_key="spot_id")
              for name in tables}
    images = {}
    if with_image:
        pixels = np.random.default_rng(0).integers(0, 255, size=(3, 150, 200), dtype=np.uint8)
        images["hires"] = Image2DModel.parse(pixels, dims=("c", "y", "x"),
                                             transformations={"global": Scale([8.0, 8.0], axes=("y", "x"))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SpatialData(shapes={"spots": shapes}, tables=parsed, images=images).write(path)
    return path


def _tree(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def store(sample, tmp_path):
    return _store(tmp_path / "sample.zarr", sample)


def test_rows_sit_at_the_centroids_of_the_shapes_they_annotate(sample, store):
    adata = io.read(store)
    assert list(adata.obs_names) == list(sample.obs_names)
    np.testing.assert_allclose(adata.obsm["spatial"], sample.obsm["spatial"])
    assert adata.uns[sd._spatialdata.SOURCE_KEY]["table"] == "table"


def test_the_image_is_attached_at_its_scale(store):
    adata = io.read_spatialdata(store, image=True)
    library = next(iter(adata.uns["spatial"].values()))
    assert library["images"]["hires"].shape == (150, 200, 3)
    assert library["scalefactors"]["tissue_hires_scalef"] == pytest.approx(1 / 8)


def test_round_trip_adds_the_results_and_keeps_everything_else(sample, store, tmp_path):
    before = _tree(store)
    adata = io.read(store)
    sd.find_domains(adata, "staig", 3, n_epochs=5, progress=False)
    out = io.write_spatialdata(adata, tmp_path / "result.zarr")
    assert _tree(store) == before  # the input store is never changed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original, written = spatialdata.read_zarr(store), spatialdata.read_zarr(out)
    old, new = original.tables["table"], written.tables["table"]
    assert list(new.obs["domain"].astype(str)) == list(adata.obs["domain"].astype(str))
    np.testing.assert_allclose(new.obsm["X_staig"], adata.obsm["X_staig"])
    assert new.uns["spatialdomains"]["method"] == "staig"
    assert (new.X != old.X).nnz == 0
    assert new.obs[old.obs.columns].equals(old.obs)
    np.testing.assert_array_equal(new.obsm["extra"], old.obsm["extra"])
    assert original.shapes["spots"].geometry.equals(written.shapes["spots"].geometry)
    np.testing.assert_array_equal(np.asarray(written.images["hires"]), np.asarray(original.images["hires"]))


def test_several_tables_need_a_choice_and_results_need_a_new_store(sample, tmp_path):
    store = _store(tmp_path / "two.zarr", sample, tables=("rna", "other"))
    with pytest.raises(InputError, match=r"2 tables \(other, rna\): choose one with table"):
        io.read_spatialdata(store)
    adata = io.read_spatialdata(store, table="rna")
    with pytest.raises(InputError, match="is the input store"):
        io.write_spatialdata(adata, store)
    with pytest.raises(InputError, match="is inside the input store"):
        io.write_spatialdata(adata, store / "results.zarr")
    assert not (store / "results.zarr").exists()
    with pytest.raises(InputError, match="already exists"):
        io.write_spatialdata(adata, tmp_path)


def test_a_store_that_is_not_spatialdata_is_named(tmp_path):
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "junk.txt").write_text("x")
    with pytest.raises(InputError, match="not a readable SpatialData store|has no table"):
        io.read(tmp_path / "broken.zarr")


def test_the_command_line_runs_a_store(store, tmp_path):
    from spatialdomains import cli

    code = cli.main(["run", str(store), "--out", str(tmp_path / "out"), "--epochs", "2", "--n-domains", "3",
                     "--quiet"])
    assert code == 0 and (tmp_path / "out" / "domains.csv").exists()


# --- Stores as spatialdata-io writes them --------------------------------------------------------------------------
HD_DATASET = "mouse_gut"


@pytest.fixture(scope="module")
def hd_store(tmp_path_factory):
    """A Visium HD store made by spatialdata-io's own reader from a Space Ranger HD folder (8 and 16 µm bins and
    segmented cells, images) and written by the installed spatialdata: one table per bin size, elements in a
    coordinate system named after the dataset and two downscaled ones."""
    spatialdata_io = pytest.importorskip("spatialdata_io", reason="spatialdata-io (the dev extra, with NumPy 2) is "
                                                                   "not installed: it makes the Visium HD store")
    from tenx_layouts import write_visium_hd

    cells = sd.datasets.simulate_cells(1500, 3, 4, 80, seed=3)
    root = tmp_path_factory.mktemp("hd_store")
    write_visium_hd(cells, root / "run" / "outs", bin_sizes=(8, 16), images=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata_io.visium_hd(root / "run" / "outs", dataset_id=HD_DATASET)
        sdata.write(root / "hd.zarr")
    return root / "hd.zarr", root / "run"


def test_a_visium_hd_store_reads_its_8_um_table_where_the_folder_reader_puts_it(hd_store):
    store, run = hd_store
    assert (store / "zarr.json").is_file()  # written by current spatialdata: zarr v3
    adata = io.read(store)
    folder = io.read(run)
    assert adata.uns[sd._spatialdata.SOURCE_KEY]["table"] == "square_008um"
    assert adata.uns[sd._spatialdata.SOURCE_KEY]["coordinate_system"] == HD_DATASET
    np.testing.assert_allclose(adata.obsm["spatial"], folder[adata.obs_names].obsm["spatial"], atol=1e-6)
    assert io.coordinate_unit_um(adata) == pytest.approx(io.coordinate_unit_um(folder), rel=1e-6)
    assert io.platform(adata) == "Visium HD"


def test_a_visium_hd_store_takes_a_table_and_a_coordinate_system(hd_store):
    store, run = hd_store
    bins = io.read(store, table="square_016um")
    assert bins.n_obs == io.read(run, bin_size=16).n_obs
    hires = io.read(store, table="square_016um", coordinate_system=f"{HD_DATASET}_downscaled_hires")
    np.testing.assert_allclose(hires.obsm["spatial"], bins.obsm["spatial"] * 0.05, rtol=1e-9)
    with pytest.raises(InputError, match=rf"coordinate_system='elsewhere'.*placed in {HD_DATASET}, "):
        io.read(store, coordinate_system="elsewhere")
    with pytest.raises(InputError, match=r"table='square_002um'.*no such table \(tables: cell_segmentations, "
                                         r"square_008um, square_016um\)"):
        io.read(store, table="square_002um")


def test_store_options_on_a_folder_are_refused_before_reading(hd_store):
    _, run = hd_store
    with pytest.raises(InputError, match=r"table='square_008um' applies to SpatialData .zarr inputs"):
        io.read(run, table="square_008um")


def test_the_command_line_runs_a_visium_hd_store_and_writes_a_new_one(hd_store, tmp_path):
    from spatialdomains import cli

    store, _ = hd_store
    before = _tree(store)
    out = tmp_path / "out"
    code = cli.main(["run", str(store), "--table", "square_016um", "--n-domains", "3", "--epochs", "2",
                     "--out", str(out), "--quiet"])
    assert code == 0 and _tree(store) == before
    domains = pd.read_csv(out / "domains.csv", index_col=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = spatialdata.read_zarr(out / "result.zarr")
    table = written.tables["square_016um"]
    assert list(table.obs["domain"].astype(str)) == list(domains.loc[table.obs_names, "domain"].astype(str))
    assert "domain" not in written.tables["square_008um"].obs


def test_the_command_line_names_its_flags_for_a_store_it_cannot_place(hd_store, tmp_path, capsys):
    from spatialdomains import cli

    store, _ = hd_store
    code = cli.main(["run", str(store), "--coordinate-system", "nowhere", "--n-domains", "3",
                     "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "--coordinate-system nowhere" in error and HD_DATASET in error
    assert not (tmp_path / "out").exists()


def _xenium_store(path, cells, *, reader="xenium"):
    """A Xenium store laid out as spatialdata-io's ``xenium()`` lays it out (field for field from its source): the
    ``cell_labels`` raster in morphology pixels (0.2125 µm) in 'global', the table annotating it through
    ``obs['cell_labels']``, and each cell's centroid in µm in ``obsm['spatial']``. Each cell is a 3 × 3 pixel
    square around its centroid."""
    from spatialdata import SpatialData
    from spatialdata.models import Labels2DModel, TableModel
    from spatialdata.transformations import Identity

    pixel_um = 0.2125
    grid = np.indices((20, 20)).reshape(2, -1).T[:cells.n_obs]  # cells 10 µm apart: their squares never touch
    centres = np.round(grid * 10.0 / pixel_um).astype(int) + 5
    raster = np.zeros((centres[:, 1].max() + 6, centres[:, 0].max() + 6), dtype=np.uint32)
    for label, (x, y) in enumerate(centres, start=1):
        raster[y - 1:y + 2, x - 1:x + 2] = label
    table = cells.copy()
    table.obsm["spatial"] = (centres + 0.5) * pixel_um  # the µm centroid of each square
    table.obs["cell_id"] = [f"cell{i}" for i in range(table.n_obs)]
    table.obs["cell_labels"] = np.arange(1, table.n_obs + 1)
    table.obs["region"] = pd.Categorical(["cell_labels"] * table.n_obs)
    parsed = TableModel.parse(table, region="cell_labels", region_key="region", instance_key="cell_labels")
    labels = Labels2DModel.parse(raster, dims=("y", "x"), transformations={"global": Identity()},
                                 chunks=(64, 64))
    sdata = SpatialData(labels={"cell_labels": labels}, tables={"table": parsed})
    if reader:
        sdata.attrs["spatialdata_io_reader"] = reader
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(path)
    return path, table.obsm["spatial"] / pixel_um


@pytest.fixture(scope="module")
def xenium_cells():
    return sd.datasets.simulate_cells(400, 3, 4, 40, seed=5)[:400].copy()


def test_a_xenium_store_uses_its_cells_micrometre_centroids(xenium_cells, tmp_path, monkeypatch):
    store, _ = _xenium_store(tmp_path / "xenium.zarr", xenium_cells)
    monkeypatch.setattr(sd._spatialdata, "_label_centroids",
                        lambda *a: pytest.fail("the label image was read although obsm['spatial'] holds centroids"))
    adata = io.read(store)
    _, pixels = _xenium_store(tmp_path / "again.zarr", xenium_cells)
    np.testing.assert_allclose(adata.obsm["spatial"], pixels * 0.2125)
    assert io.coordinate_unit_um(adata) == 1.0 and io.platform(adata) == "Xenium"


def test_a_labels_table_from_another_tool_is_placed_from_its_labels_in_one_pass(xenium_cells, tmp_path):
    store, pixels = _xenium_store(tmp_path / "labels.zarr", xenium_cells, reader=None)
    adata = io.read(store)
    np.testing.assert_allclose(adata.obsm["spatial"], pixels, atol=1e-9)  # centroids in the raster's pixels
    assert io.coordinate_unit_um(adata) is None


def test_a_samplesheet_names_a_stores_table_and_coordinate_system(tmp_path):
    from spatialdomains.report import batch

    (tmp_path / "gut.zarr").mkdir()
    (tmp_path / "ok.h5ad").write_text("")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,input,table,coordinate_system\nA,gut.zarr,square_016um,gut\nB,ok.h5ad,,global\n")
    with pytest.raises(InputError, match=r"line 3 \(B\): coordinate_system 'global' applies to SpatialData .zarr "
                                         r"inputs, and no input is one: leave it out"):
        batch.read_samplesheet(sheet)
    sheet.write_text("sample,input,table,coordinate_system\nA,gut.zarr,square_016um,gut\n")
    request = batch.read_samplesheet(sheet)[0]
    assert (request.table, request.coordinate_system) == ("square_016um", "gut")
