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


SMALL_IMAGE = {"input_px": 32, "backbone": "resnet18", "patch_px": 64, "batch_size": 16}


@pytest.mark.filterwarnings("ignore:no weights file")
def test_embed_with_images_from_r_computes_features_per_slice():
    parts = [sd.datasets.simulate_visium(100, 3, seed=s, image=True) for s in (1, 2)]
    images = {f"s{i}": {"array": p.uns["spatial"]["simulated"]["images"]["hires"], "scale": sd.datasets.IMAGE_SCALE,
                        "fiducial": None} for i, p in enumerate(parts)}
    counts = sp.hstack([sp.csc_matrix(p.X.T) for p in parts]).tocsc()
    coordinates = np.vstack([p.obsm["spatial"] for p in parts])
    names = [f"{n}-{i}" for i, p in enumerate(parts) for n in p.obs_names]
    slices = [f"s{i}" for i, p in enumerate(parts) for _ in range(p.n_obs)]
    params = {"n_epochs": 2, "use_image": True, "image_options": SMALL_IMAGE}
    out = bridge.embed("staig", counts, coordinates, names, list(parts[0].var_names), slices=slices, images=images,
                       params=params)
    assert out["record"]["image_key"] == "X_image" and not out["record"]["training"]["debiased"]
    assert sorted(out["image_record"]["per_slice"]) == ["s0", "s1"]
    one = bridge.embed("staig", sp.csc_matrix(parts[0].X.T), parts[0].obsm["spatial"], list(parts[0].obs_names),
                       list(parts[0].var_names), images={"any": images["s0"]}, params=params)
    assert one["record"]["training"]["debiased"] and one["image_record"]["image_sources"] == ["hires"]
    with pytest.raises(InputError, match="one image per slice"):
        bridge.embed("staig", counts, coordinates, names, list(parts[0].var_names), slices=slices,
                     images={"s0": images["s0"]}, params=params)
