import numpy as np
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
