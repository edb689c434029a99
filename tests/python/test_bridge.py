"""The entry points the R package calls through reticulate."""
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from spatialdomains import bridge
from spatialdomains.errors import InputError


def test_simulate_gives_dgcmatrix_slots_that_rebuild_the_counts():
    pieces = bridge.simulate(200, 3, seed=1)
    adata = sd.datasets.simulate_visium(200, 3, seed=1)
    counts = pieces["counts"]
    rebuilt = sp.csc_matrix((counts["x"], counts["i"], counts["p"]), shape=tuple(counts["dim"]))
    np.testing.assert_array_equal(rebuilt.toarray(), adata.X.T.toarray())
    assert pieces["spot_names"] == list(adata.obs_names)
    assert pieces["obs"]["ground_truth"] == list(adata.obs["ground_truth"].astype(str))
    np.testing.assert_array_equal(pieces["coordinates"], adata.obsm["spatial"])
    assert pieces["image"] is None and bridge.simulate(200, 3, seed=1, image=True)["image"].ndim == 3


def test_embed_matches_the_python_api_and_returns_plain_records():
    adata = sd.datasets.simulate_visium(200, 3, seed=1)
    out = bridge.embed("staig", sp.csc_matrix(adata.X.T), adata.obsm["spatial"], list(adata.obs_names),
                       list(adata.var_names), library_size=adata.obs["total_counts"].to_numpy(),
                       params={"n_epochs": 5}, random_state=3)
    sd.tl.staig(adata, n_epochs=5, random_state=3, library_size_key="total_counts", progress=False)
    assert out["embedding"].dtype == np.float64
    np.testing.assert_allclose(out["embedding"], adata.obsm["X_staig"], rtol=1e-5, atol=1e-6)
    assert out["record"]["parameters"]["n_epochs"] == 5
    assert isinstance(out["record"]["genes"], list)


def test_embed_names_mismatched_pieces():
    adata = sd.datasets.simulate_visium(200, 3, seed=1)
    with pytest.raises(InputError, match="gene names"):
        bridge.embed("staig", sp.csc_matrix(adata.X.T), adata.obsm["spatial"], list(adata.obs_names),
                     list(adata.var_names)[:-1])
    with pytest.raises(InputError, match="method must be one of"):
        bridge.embed("nope", sp.csc_matrix(adata.X.T), adata.obsm["spatial"], list(adata.obs_names),
                     list(adata.var_names))


def test_mclust_through_rpy2_is_refused_inside_r(monkeypatch):
    monkeypatch.setitem(sys.modules, "rpycall", types.ModuleType("rpycall"))
    reason = sd.cluster.mclust_unavailable_reason()
    assert reason is not None and "clusterDomains()" in reason
