"""SpatialData stores: a table read with positions from the shapes it annotates, results written to a new store."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
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
