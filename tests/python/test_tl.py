import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from spatialdomains.errors import InputError

FAST = {"n_epochs": 40, "n_top_genes": 500, "progress": False}


def test_find_domains_adds_results_and_keeps_the_input(sample):
    x_before, obs_before = sample.X.copy(), sample.obs.copy()
    sd.find_domains(sample, n_domains=3, cluster_method="gmm", **FAST)
    assert (sample.X != x_before).nnz == 0
    for column in obs_before:
        assert sample.obs[column].equals(obs_before[column])
    assert sample.obsm["X_staig"].shape == (sample.n_obs, 64)
    assert sample.obsm["X_staig_encoder"].shape == (sample.n_obs, 64)
    assert list(sample.obs["domain"].cat.categories) == ["1", "2", "3"]
    assert "domain_unrefined" in sample.obs  # a lattice: refinement on, raw labels kept
    record = sample.uns["spatialdomains"]
    assert record["method"] == "staig" and record["cluster"]["backend"] == "gmm"
    staig = record["staig"]
    assert staig["parameters"]["tau"] == 10.0 and staig["parameters"]["n_epochs"] == 40
    assert staig["random_state"] == 0 and "torch" in staig["versions"]
    assert set(staig["timings"]) == {"preprocess", "graph", "train"}
    assert len(staig["genes"]) == 500 and staig["training"]["epochs_run"] == 40


def test_results_survive_an_h5ad_round_trip(sample, tmp_path):
    sd.find_domains(sample, n_domains=3, cluster_method="kmeans", **FAST)
    sd.io.write_h5ad(sample, tmp_path / "result.h5ad")
    back = sd.io.read(tmp_path / "result.h5ad")
    np.testing.assert_array_equal(back.obsm["X_staig"], sample.obsm["X_staig"])
    assert back.uns["spatialdomains"]["cluster"]["backend"] == "kmeans"


def test_spots_without_counts_get_no_domain(sample):
    x = sample.X.toarray()
    x[[0, 10]] = 0
    sample.X = sp.csr_matrix(x)
    sd.find_domains(sample, n_domains=3, cluster_method="gmm", **FAST)
    assert np.isnan(sample.obsm["X_staig"][[0, 10]]).all()
    assert sample.obs["domain"].isna().sum() == 2 and sample.obs["domain"].iloc[[0, 10]].isna().all()
    assert sample.uns["spatialdomains"]["staig"]["n_spots_left_out"] == 2


def test_cluster_chooses_the_number_of_domains(sample):
    sd.tl.staig(sample, **FAST)
    sd.tl.cluster(sample, method="kmeans", n_domains=None, n_domains_range=(2, 5), refine=False)
    record = sample.uns["spatialdomains"]["cluster"]
    assert record["n_domains_chosen_by"] == "silhouette"
    assert set(record["details"]["silhouette_by_n_domains"]) == {"2", "3", "4", "5"}
    assert "domain_unrefined" not in sample.obs


def test_helpful_errors(sample):
    with pytest.raises(InputError, match="run a model first"):
        sd.tl.cluster(sample)
    with pytest.raises(InputError, match="library_size_key"):
        sd.tl.staig(sample, library_size_key="missing", **FAST)
    with pytest.raises(InputError, match="preset"):
        sd.tl.staig(sample, preset="best", **FAST)
    with pytest.raises(InputError, match="tau"):
        sd.tl.staig(sample, tau=-1, **FAST)
    with pytest.raises(InputError, match="method"):
        sd.find_domains(sample, method="magic")


def test_presets(sample):
    from spatialdomains.pipeline import configure

    _, published, run = configure("staig", sample, preset="published")
    assert (published.tau, published.n_epochs, published.edge_drop) == (34.0, 340, "gene_adaptive")
    assert run.preset == "published"
    assert configure("staig", sample, preset="published", tau=5)[1].tau == 5
    assert configure("staig", sample)[1].tau == 10.0
    cells = configure("staig", sample, preset="cells")[1]
    assert (cells.n_neighbors, cells.n_layers, cells.tau) == (8, 2, 10.0)
    assert configure("staig", sample, preset="cells", n_layers=1)[1].n_layers == 1
    with pytest.raises(InputError, match="preset"):
        configure("spotscape", sample, preset="cells")


def test_domain_plot(sample, tmp_path):
    sd.find_domains(sample, n_domains=3, cluster_method="kmeans", **FAST)
    figure = sd.pl.domains(sample, save=tmp_path / "domains.png")
    assert (tmp_path / "domains.png").stat().st_size > 1000
    assert len(figure.axes[0].collections) == 3


def test_umap_of_a_large_sample_places_a_seeded_random_subset_and_plots_it(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((600, 1), dtype=np.float32))
    adata.obsm["X_model"] = rng.normal(size=(600, 8)).astype(np.float32)
    adata.obsm["X_model"][:5] = np.nan  # spots without an embedding are never placed
    adata.obs["domain"] = pd.Categorical(rng.integers(0, 3, 600).astype(str))
    sd.tl.umap(adata, use_rep="X_model", max_spots=200, random_state=3)
    placed = np.all(np.isfinite(adata.obsm["X_umap"]), axis=1)
    assert placed.sum() == 200 and not placed[:5].any()
    record = adata.uns["spatialdomains"]["umap"]
    assert record["n_spots_placed"] == 200 and record["n_spots_with_embedding"] == 595
    again = adata.copy()
    sd.tl.umap(again, use_rep="X_model", max_spots=200, random_state=3)
    np.testing.assert_array_equal(np.isfinite(again.obsm["X_umap"][:, 0]), placed)
    figure = sd.pl.embedding(adata, "X_umap", "domain", save=tmp_path / "umap.png")
    assert "200 of 600 spots" in figure.axes[0].get_title()
    plt.close(figure)
    with pytest.raises(InputError, match="max_spots=1"):
        sd.tl.umap(adata, use_rep="X_model", max_spots=1)


def test_umap_keeps_working_where_numba_has_nowhere_to_keep_compiled_code(monkeypatch):
    """A read-only install and home: numba finds no cache folder, and the UMAP compiles in-process as before."""
    import umap  # noqa: F401  (its own cache=True functions are set up at import, before the install turns read-only)
    from numba.core import caching

    from spatialdomains.tl import domains

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    monkeypatch.delenv("NUMBA_CACHE_LOCATOR_CLASSES", raising=False)
    domains._keep_umap_compiled.__wrapped__()
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(40)]))
    adata.obsm["X_e"] = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    sd.tl.umap(adata, use_rep="X_e")
    assert np.isfinite(adata.obsm["X_umap"]).all()


def test_a_full_disk_while_numba_keeps_compiled_code_does_not_fail_the_run(tmp_path, monkeypatch):
    """numba's own disk cache raises when its write fails; the UMAP's keeps the code compiled in-process."""
    import errno
    import importlib.util

    from numba.core import caching

    from spatialdomains.tl import domains

    def full_disk(self, key, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(caching.IndexDataCacheFile, "save", full_disk)
    source = tmp_path / "compiled_twice.py"
    source.write_text("import numba\n\n@numba.njit\ndef plain(x):\n    return x + 1\n\n"
                      "@numba.njit\ndef kept(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("compiled_twice", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.plain.enable_caching()
    with pytest.raises(OSError):
        module.plain(1)
    domains._cache_on_disk(module.kept)
    assert module.kept(1) == 2
