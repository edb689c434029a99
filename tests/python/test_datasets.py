import numpy as np
import pandas as pd
import pytest

import spatialdomains as sd
from spatialdomains.errors import InputError


def test_same_seed_same_data_other_seed_other_data():
    a = sd.datasets.simulate_visium(300, 4, seed=3)
    b = sd.datasets.simulate_visium(300, 4, seed=3)
    c = sd.datasets.simulate_visium(300, 4, seed=4)
    assert (a.X != b.X).nnz == 0
    assert a.obs["ground_truth"].equals(b.obs["ground_truth"])
    assert (a.X != c.X).nnz > 0


def test_layout_counts_and_truth(small_sample):
    adata = small_sample
    assert 350 <= adata.n_obs <= 450
    x = adata.X.toarray()
    assert np.all(x == np.round(x)) and x.min() >= 0
    totals = x.sum(axis=1)
    assert totals.std() / totals.mean() > 0.2  # library sizes vary
    np.testing.assert_array_equal(adata.obs["total_counts"].to_numpy(), totals)
    assert list(adata.obs["ground_truth"].cat.categories) == ["D1", "D2", "D3"]
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    assert sd.graph.is_lattice(adata.obsm["spatial"])
    assert adata.uns["simulation"]["go_id"] == ["GO:0042552", "GO:0006958", "GO:0006096"]


def test_each_domain_expresses_its_planted_go_program(small_sample):
    adata = small_sample
    x = adata.X.toarray()
    x = x / x.sum(axis=1, keepdims=True)
    codes = adata.obs["ground_truth"].cat.codes.to_numpy()
    for k, go_id in enumerate(adata.uns["simulation"]["go_id"]):
        genes = (adata.var["program"] == go_id).to_numpy()
        assert genes.sum() == 30
        inside = x[codes == k][:, genes].mean()
        # Fold change 4 inside, half of it (in log scale, 2x) leaking into the adjacent layers, 1x further away.
        assert inside > 1.5 * x[codes != k][:, genes].mean()
        far = np.abs(codes - k) >= 2
        if far.any():
            assert inside > 3 * x[far][:, genes].mean()


def test_boundaries_are_curved():
    adata = sd.datasets.simulate_visium(2000, 5, seed=1)
    rows = adata.obs["array_row"].to_numpy()
    truth = adata.obs["ground_truth"].cat.codes.to_numpy()
    # Flat layers would give every lattice row a single domain; curved ones cross rows.
    mixed_rows = sum(len(np.unique(truth[rows == r])) > 1 for r in np.unique(rows))
    assert mixed_rows > 10


def test_optional_image_depends_on_domain():
    adata = sd.datasets.simulate_visium(300, 3, seed=2, image=True)
    library = adata.uns["spatial"]["simulated"]
    image, scale = library["images"]["hires"], library["scalefactors"]["tissue_hires_scalef"]
    assert image.ndim == 3 and image.shape[2] == 3 and 0 <= image.min() and image.max() <= 1
    pixels = np.round(adata.obsm["spatial"] * scale).astype(int)
    # Stripe texture differs between domains: the dominant stripe direction of patches around the spots.
    truth = adata.obs["ground_truth"].cat.codes.to_numpy()
    grey = image.mean(axis=2)
    spectra = []
    for x, y in pixels:
        patch = grey[y - 8:y + 8, x - 8:x + 8]
        spectra.append(np.abs(np.fft.fft2(patch - patch.mean())).ravel())
    spectra = np.asarray(spectra)
    centroids = np.stack([spectra[truth == k].mean(axis=0) for k in range(3)])
    nearest = np.argmin(((spectra[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean(nearest == truth) > 0.8
    assert sd.datasets.simulate_visium(300, 3, seed=2).uns["spatial"]["simulated"]["images"] == {}


def test_invalid_arguments():
    with pytest.raises(InputError, match="n_domains"):
        sd.datasets.simulate_visium(300, 9)
    with pytest.raises(InputError, match="n_spots"):
        sd.datasets.simulate_visium(10, 3)


def test_cells_are_deterministic_sparse_and_xenium_like():
    a = sd.datasets.simulate_cells(3000, 4, 8, 200, seed=5)
    b = sd.datasets.simulate_cells(3000, 4, 8, 200, seed=5)
    c = sd.datasets.simulate_cells(3000, 4, 8, 200, seed=6)
    assert a.shape == (3000, 200) and a.X.format == "csr" and a.X.dtype == np.float32
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert a.obs["ground_truth"].equals(b.obs["ground_truth"]) and (a.X != c.X).nnz > 0
    assert 0.05 < a.X.nnz / np.prod(a.shape) < 0.5  # Xenium panels: most genes absent from most cells
    assert 100 < a.obs["total_counts"].mean() < 300
    np.testing.assert_allclose(a.obs["total_counts"], np.asarray(a.X.sum(axis=1)).ravel())
    # irregular positions in µm, about 10 µm apart
    from scipy.spatial import cKDTree

    distance = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)[0][:, 1]
    assert 4 < np.median(distance) < 10 and distance.std() > 1


def test_cell_niches_differ_by_their_mix_of_cell_types():
    adata = sd.datasets.simulate_cells(20000, 5, 10, 300, seed=2)
    planted = adata.uns["simulation"]["proportions"]
    observed = pd.crosstab(adata.obs["ground_truth"], adata.obs["cell_type"], normalize="index").to_numpy()
    np.testing.assert_allclose(observed, planted, atol=0.05)
    distance = 0.5 * np.abs(planted[:, None] - planted[None]).sum(axis=2)
    assert distance[np.triu_indices(5, 1)].min() >= 1 / 3
    # one type's expression does not depend on its niche: no gene marks a niche by itself
    kind, niche = adata.obs["cell_type"].to_numpy(), adata.obs["ground_truth"].to_numpy()
    common = pd.Series(kind).mode()[0]
    first, second = pd.Series(niche[kind == common]).value_counts().index[:2]
    profiles = [np.asarray(adata.X[(kind == common) & (niche == where)].mean(axis=0)).ravel()
                for where in (first, second)]
    top = np.argsort(profiles[0])[-20:]
    np.testing.assert_allclose(profiles[0][top], profiles[1][top], rtol=0.25)


def test_cells_simulator_never_holds_a_dense_cells_by_genes_array():
    import tracemalloc

    tracemalloc.start()
    adata = sd.datasets.simulate_cells(50_000, 4, 8, 20_000, seed=0, mean_transcripts=100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    dense = adata.n_obs * adata.n_vars * 4
    assert peak < dense / 8, f"peak {peak / 2**20:.0f} MB against a dense float32 copy of {dense / 2**20:.0f} MB"


@pytest.mark.parametrize("arguments, message", [
    ((50, 4, 8, 200), "n_cells must be at least 100"),
    ((1000, 1, 8, 200), "at least 2"),
    ((1000, 4, 8, 10), "n_genes must be at least twice"),
])
def test_cells_simulator_names_bad_settings(arguments, message):
    with pytest.raises(InputError, match=message):
        sd.datasets.simulate_cells(*arguments)


def test_paired_cells_add_a_protein_panel_that_tells_the_cell_types_apart():
    mdata = sd.datasets.simulate_paired_cells(4000, 4, 8, 200, n_proteins=24, seed=5)
    again = sd.datasets.simulate_paired_cells(4000, 4, 8, 200, n_proteins=24, seed=5)
    rna, adt = mdata["rna"], mdata["adt"]
    assert (rna.X != sd.datasets.simulate_cells(4000, 4, 8, 200, seed=5).X).nnz == 0  # the RNA is simulate_cells'
    assert adt.shape == (4000, 24) and adt.X.format == "csr" and (adt.X != again["adt"].X).nnz == 0
    assert list(mdata.obs["ground_truth"]) == list(rna.obs["ground_truth"])
    np.testing.assert_array_equal(mdata.obsm["spatial"], rna.obsm["spatial"])
    # the proteins alone tell the cell types apart: nearest type mean (log scale) names most cells' type
    kind = adt.obs["cell_type"].cat.codes.to_numpy()
    logged = np.log1p(adt.X.toarray() / adt.X.sum(axis=1).A * 1e3)
    means = np.stack([logged[kind == t].mean(axis=0) for t in range(8)])
    nearest = ((logged[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert np.mean(nearest == kind) > 0.8
    with pytest.raises(InputError, match="n_proteins must be at least n_cell_types"):
        sd.datasets.simulate_paired_cells(1000, 4, 8, 200, n_proteins=5)
