"""Several slices: combining, per-slice gene selection, slice bookkeeping through the tools, no label leaks."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from spatialdomains import pp, slices
from spatialdomains.errors import InputError


@pytest.fixture(scope="module")
def two_slices():
    first = sd.datasets.simulate_visium(300, 3, seed=11)
    second = sd.datasets.simulate_visium(260, 3, seed=12)
    return first, second


def _copies(pair):
    return [a.copy() for a in pair]


def test_slice_layout_groups_spots_stably():
    layout = slices.slice_layout(["b", "a", "b", "a", "a"])
    assert layout.names == ["b", "a"]
    assert layout.order.tolist() == [0, 2, 1, 3, 4]
    assert layout.bounds == [(0, 2), (2, 5)]
    with pytest.raises(InputError, match="no slice label"):
        slices.slice_layout(["a", None])


def test_combine_keeps_each_slice_and_refuses_bad_input(two_slices):
    first, second = two_slices
    combined = slices.combine({"A": first, "B": second}, "section")
    assert combined.n_obs == first.n_obs + second.n_obs
    assert list(combined.obs["section"].cat.categories) == ["A", "B"]
    np.testing.assert_array_equal(combined.obsm["spatial"][first.n_obs:], second.obsm["spatial"])  # not shifted
    assert combined.obs_names.is_unique
    with pytest.raises(InputError, match="no gene in common"):
        renamed = second.copy()
        renamed.var_names = [f"other{i}" for i in range(renamed.n_vars)]
        slices.combine([first, renamed])
    with pytest.raises(InputError, match="spatial"):
        bare = second.copy()
        del bare.obsm["spatial"]
        slices.combine([first, bare])


def test_per_slice_hvgs_are_intersected_and_each_slice_normalised_alone(two_slices):
    first, second = two_slices
    combined = slices.combine([first, second])
    counts = sp.csr_matrix(combined.X)
    bounds = [(0, first.n_obs), (first.n_obs, combined.n_obs)]
    x, genes = pp.multi_slice_features(counts, bounds, n_top_genes=150, min_shared_genes=10)
    expected = np.intersect1d(pp.highly_variable_genes(counts[:first.n_obs], 150),
                              pp.highly_variable_genes(counts[first.n_obs:], 150))
    np.testing.assert_array_equal(genes, expected)
    # Spotscape's order: normalised over the slice's own 150 HVGs, then subset to the shared genes.
    own = pp.highly_variable_genes(counts[first.n_obs:], 150)
    block = counts[first.n_obs:].toarray()
    expected_second = np.log1p(block[:, genes] * (1e4 / block[:, own].sum(axis=1, keepdims=True)))
    assert sp.issparse(x)
    np.testing.assert_allclose(x[first.n_obs:].toarray(), expected_second, rtol=1e-5)


def test_too_few_shared_genes_is_an_error_that_says_what_to_do(two_slices):
    first, second = two_slices
    combined = slices.combine([first, second])
    bounds = [(0, first.n_obs), (first.n_obs, combined.n_obs)]
    with pytest.raises(InputError, match="highly variable in every slice.*raise n_top_genes"):
        pp.multi_slice_features(sp.csr_matrix(combined.X), bounds, n_top_genes=20, min_shared_genes=100)


@pytest.mark.parametrize("method, params", [
    ("spotscape", {"n_epochs": 3, "n_top_genes": 1000}),
    ("staig", {"n_epochs": 3, "n_top_genes": 1000}),
])
def test_list_input_returns_the_combined_result_and_hands_each_slice_its_rows(two_slices, method, params):
    inputs = _copies(two_slices)
    originals = [a.X.copy() for a in inputs]
    combined = sd.find_domains(inputs, method=method, n_domains=3, cluster_method="kmeans", progress=False,
                               **params)
    key = f"X_{method}"
    assert combined.obs["slice"].tolist() == ["slice1"] * inputs[0].n_obs + ["slice2"] * inputs[1].n_obs
    for name, adata, counts in zip(["slice1", "slice2"], inputs, originals):
        rows = (combined.obs["slice"] == name).to_numpy()
        np.testing.assert_array_equal(adata.obsm[key], combined.obsm[key][rows])
        assert adata.obs["domain"].tolist() == combined.obs["domain"][rows].tolist()
        assert adata.uns["spatialdomains"]["slice"] == name
        assert (adata.X != counts).nnz == 0  # the user's counts are untouched
    record = combined.uns["spatialdomains"][method]
    assert record["slices"].tolist() == ["slice1", "slice2"]
    assert record["training"]["n_slices"] == 2


def test_slices_need_not_be_contiguous_in_one_anndata(two_slices):
    combined = slices.combine(_copies(two_slices))
    sd.tl.spotscape(combined, batch_key="slice", n_epochs=3, n_top_genes=1000, progress=False, random_state=4)
    # Interleave the slices' rows while keeping each slice's own order: per spot, training is the same.
    sizes = [a.n_obs for a in two_slices]
    order = np.argsort(np.r_[np.arange(sizes[0]) * 2, np.arange(sizes[1]) * 2 + 1], kind="stable")
    interleaved = slices.combine(_copies(two_slices))[order].copy()
    sd.tl.spotscape(interleaved, batch_key="slice", n_epochs=3, n_top_genes=1000, progress=False, random_state=4)
    np.testing.assert_allclose(interleaved.obsm["X_spotscape"], combined.obsm["X_spotscape"][order], rtol=1e-5,
                               atol=1e-6)


def test_prototypes_never_see_labels(two_slices):
    runs = []
    for shuffle in (False, True):
        combined = slices.combine(_copies(two_slices))
        if shuffle:
            combined.obs["ground_truth"] = np.random.default_rng(0).permutation(combined.obs["ground_truth"].to_numpy())
        sd.tl.spotscape(combined, batch_key="slice", n_domains=3, n_epochs=4, warmup_epochs=2, n_top_genes=1000,
                        progress=False, random_state=2)
        assert combined.uns["spatialdomains"]["spotscape"]["training"]["prototype_counts"].tolist() == [3, 5, 6]
        runs.append(combined.obsm["X_spotscape"])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_missing_batch_key_names_the_columns(sample):
    with pytest.raises(InputError, match="batch_key: obs\\['section'\\] does not exist"):
        sd.tl.spotscape(sample, batch_key="section", n_epochs=1, progress=False)


def test_refinement_stays_within_each_slice(two_slices):
    # Both slices share coordinates; refining across slices would mix their labels.
    combined = slices.combine(_copies(two_slices))
    rng = np.random.default_rng(0)
    combined.obsm["X_test"] = np.where(combined.obs["slice"].to_numpy()[:, None] == "slice1", 0.0, 10.0) \
        + rng.normal(0, 0.01, (combined.n_obs, 2))
    sd.tl.cluster(combined, use_rep="X_test", n_domains=2, method="kmeans", refine=True, batch_key="slice")
    table = pd.crosstab(combined.obs["slice"], combined.obs["domain"])
    assert (table.to_numpy() > 0).sum() == 2  # each slice is one domain, untouched by the other's spots
