import hashlib

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import write_space_ranger
from spatialdomains import io
from spatialdomains.errors import InputError


@pytest.mark.parametrize("header", [True, False])
def test_read_visium_lays_out_like_scanpy(sample, tmp_path, header):
    folder = write_space_ranger(sample, tmp_path / "outs", header=header)
    adata = io.read(tmp_path)  # the parent of outs/ works too
    assert adata.shape == sample.shape
    assert list(adata.obs_names) == list(sample.obs_names)
    np.testing.assert_allclose(adata.obsm["spatial"], sample.obsm["spatial"])
    assert (adata.X != sample.X).nnz == 0
    assert adata.var["gene_ids"].iloc[0] == "ENSG00000000000"
    library = adata.uns["spatial"]["lib1"]
    assert library["images"]["lowres"].shape[:2] == (20, 30)
    assert library["scalefactors"]["tissue_hires_scalef"] == pytest.approx(0.25)
    assert io.read(folder / "filtered_feature_bc_matrix.h5").shape == sample.shape


def test_read_visium_reports_missing_pieces(sample, tmp_path):
    with pytest.raises(InputError, match="filtered_feature_bc_matrix.h5"):
        io.read_visium(tmp_path)
    folder = write_space_ranger(sample, tmp_path / "outs")
    (folder / "spatial" / "tissue_positions.csv").unlink()
    with pytest.raises(InputError, match="tissue_positions"):
        io.read_visium(folder)


def test_read_visium_rejects_barcodes_without_positions(sample, tmp_path):
    folder = write_space_ranger(sample, tmp_path / "outs")
    positions = folder / "spatial" / "tissue_positions.csv"
    lines = positions.read_text().splitlines()
    positions.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    with pytest.raises(InputError, match="not in the tissue positions"):
        io.read_visium(folder)


def test_read_dispatch_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        io.read(tmp_path / "missing.h5ad")
    (tmp_path / "x.loom").write_text("")
    with pytest.raises(InputError, match="unknown file type"):
        io.read(tmp_path / "x.loom")


def test_reading_never_modifies_the_file(sample, tmp_path):
    path = tmp_path / "sample.h5ad"
    sample.write_h5ad(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    adata = io.read(path)
    adata.obs["new"] = 1
    io.check_input(adata)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_check_input_accepts_good_data_and_leaves_it_alone(sample):
    x_before = sample.X.copy()
    checked = io.check_input(sample)
    assert checked.counts.shape == sample.shape and checked.spots.all()
    assert (sample.X != x_before).nnz == 0
    assert list(sample.obsm) == ["spatial"]


def test_missing_coordinates(sample):
    del sample.obsm["spatial"]
    with pytest.raises(InputError, match=r"obsm\['spatial'\] is missing"):
        io.check_input(sample)


def test_non_finite_coordinates(sample):
    sample.obsm["spatial"][3, 0] = np.nan
    with pytest.raises(InputError, match="non-finite coordinates for 1 spots"):
        io.check_input(sample)


@pytest.mark.parametrize("bad, message", [(-1.0, "negative values"), (np.nan, "NaN or infinite"),
                                          (np.inf, "NaN or infinite"), (0.5, "non-integer")])
def test_bad_count_values(sample, bad, message):
    x = sample.X.toarray()
    x[0, 0] = bad
    sample.X = sp.csr_matrix(x)
    with pytest.raises(InputError, match=message):
        io.check_input(sample)


def test_non_integer_allowed_when_counts_not_required(sample):
    sample.X = sample.X * 0.5
    assert io.check_input(sample, require_counts=False).counts.shape == sample.shape


def test_duplicated_barcodes(sample):
    names = list(sample.obs_names)
    names[1] = names[0]
    sample.obs_names = names
    with pytest.raises(InputError, match="obs_names_make_unique"):
        io.check_input(sample)


def test_zero_count_spots_are_left_out_and_logged(sample, caplog):
    x = sample.X.toarray()
    x[[2, 5]] = 0
    sample.X = sp.csr_matrix(x)
    checked = io.check_input(sample)
    assert checked.counts.shape[0] == sample.n_obs - 2
    assert not checked.spots[2] and not checked.spots[5]
    assert f"2 of {sample.n_obs} spots with zero total counts" in caplog.text


def test_fewer_spots_than_neighbours(sample):
    with pytest.raises(InputError, match="n_neighbors=5"):
        io.check_input(sample[:5].copy(), n_neighbors=5)


def test_too_few_genes(sample):
    x = sample.X.toarray()
    x[:, 5:] = 0
    sample.X = sp.csr_matrix(x)
    with pytest.raises(InputError, match="only 5 genes have any counts"):
        io.check_input(sample)


def test_missing_layer(sample):
    with pytest.raises(InputError, match=r"layers\['counts'\] does not exist"):
        io.check_input(sample, layer="counts")


def test_atomic_writes_leave_no_partial_file(sample, tmp_path):
    target = tmp_path / "out.h5ad"
    io.write_h5ad(sample, target)
    first = target.read_bytes()

    class Unwritable(ad.AnnData):
        def write_h5ad(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError):
        io.write_h5ad(Unwritable(sample), target)
    assert target.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]
    io.write_json({"a": np.float32(1.5), "b": np.arange(2)}, tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text().count("1.5") == 1
