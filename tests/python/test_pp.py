import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from spatialdomains import pp


def test_staig_features_equal_the_scanpy_recipe(small_sample):
    counts = small_sample.X
    x, genes = pp.staig_features(counts, n_top_genes=500)
    assert x.dtype == np.float32 and x.shape == (small_sample.n_obs, 500)
    assert sp.issparse(x) and x.format == "csr"  # no dense spots × genes copy, at any size
    x = x.toarray()

    reference = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(reference, flavor="seurat_v3", n_top_genes=500)
        np.testing.assert_array_equal(genes, np.flatnonzero(reference.var["highly_variable"]))
        sc.pp.normalize_total(reference, target_sum=1e4)
        sc.pp.log1p(reference)
        reference = reference[:, reference.var["highly_variable"]].copy()
        sc.pp.scale(reference, zero_center=False, max_value=10)
    expected = reference.X.toarray() if sp.issparse(reference.X) else np.asarray(reference.X)
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-5)
    assert x.max() <= 10.0 and x.min() >= 0.0


def test_true_library_size_is_used_when_given(small_sample):
    counts = small_sample.X
    totals = np.asarray(counts.sum(axis=1)).ravel()
    x_default, _ = pp.staig_features(counts, n_top_genes=200)
    x_given, _ = pp.staig_features(counts, n_top_genes=200, library_size=totals)
    np.testing.assert_allclose(x_default.toarray(), x_given.toarray(), rtol=1e-5)
    x_doubled, _ = pp.staig_features(counts, n_top_genes=200, library_size=2 * totals)
    assert not np.allclose(x_default.toarray(), x_doubled.toarray())


def test_subset_warning_and_small_gene_sets(small_sample, caplog):
    counts = small_sample.X[:, :40]
    x, genes = pp.staig_features(counts, n_top_genes=3000)
    assert "pass the true per-spot totals" in caplog.text
    expressed = np.asarray((counts > 0).sum(axis=0)).ravel() > 0
    np.testing.assert_array_equal(genes, np.flatnonzero(expressed))


def test_column_std_of_a_sparse_matrix_in_chunks_equals_numpy():
    x = sp.random(1000, 40, density=0.2, format="csr", dtype=np.float32, random_state=1)
    np.testing.assert_allclose(pp.column_std(x, rows_per_chunk=97), x.toarray().astype(np.float64).std(axis=0, ddof=1),
                               rtol=1e-9)


def test_sparse_pca_is_exact_and_never_dense(monkeypatch):
    """A sparse matrix is solved through the genes × genes covariance, never made dense; its components equal an
    exact dense PCA's (up to sign)."""
    from sklearn.decomposition import PCA

    x = sp.random(800, 120, density=0.1, format="csr", dtype=np.float32, random_state=3)
    x.data = np.log1p(10 * x.data)
    exact = PCA(10, svd_solver="full").fit(x.toarray().astype(np.float64))
    monkeypatch.setattr(sp.csr_matrix, "toarray", lambda self, *a, **k: pytest.fail("made dense"))
    scores, loadings, mean = pp.principal_components(x, 10)
    signs = np.sign((loadings * exact.components_.T).sum(axis=0))
    np.testing.assert_allclose(loadings * signs, exact.components_.T, atol=1e-4)
    np.testing.assert_allclose(mean, exact.mean_, atol=1e-6)
    assert scores.shape == (800, 10) and scores.dtype == np.float32
