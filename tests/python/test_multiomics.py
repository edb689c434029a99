"""Paired omics: preprocessing against hand-computed values, spot matching and its errors, SpaMI's parts
against dense references, and the tools end to end on simulated pairs."""
from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import spatialdomains as sd
from spatialdomains import modalities, pp
from spatialdomains.errors import InputError
from spatialdomains.models import spami


# --- preprocessing ---------------------------------------------------------------------------------------------

def test_clr_matches_hand_computed_values():
    counts = np.array([[0, 1, 3], [2, 2, 0]], dtype=float)
    # Row 1: log1p = 0, ln 2, ln 4 → mean ln 2 → geometric 2 → log1p(x / 2).
    # Row 2: log1p = ln 3, ln 3, 0 → mean (2/3) ln 3 → geometric 3^(2/3).
    g2 = 3 ** (2 / 3)
    expected = np.array([[0, np.log(1.5), np.log(2.5)], [np.log1p(2 / g2), np.log1p(2 / g2), 0]])
    np.testing.assert_allclose(pp.clr(sp.csr_matrix(counts)), expected, rtol=1e-6)


def test_tfidf_matches_hand_computed_values():
    binary = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=float)
    # tf = x / row sum; idf = N / column sum (N = 3; column sums 3, 2, 2).
    tf = binary / np.array([[2], [2], [3]])
    weighted = tf * np.array([1.0, 1.5, 1.5])
    expected = np.log1p(1e4 * weighted / weighted.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(pp.tfidf(sp.csr_matrix(binary)).toarray(), expected, rtol=1e-10)


def test_lsi_matches_a_dense_svd_reference():
    from sklearn.utils.extmath import svd_flip

    # Six groups of spots opening their own peaks: six singular values stand far above the rest, so the
    # randomised SVD is exact to float precision on the components kept.
    rng = np.random.default_rng(3)
    group = np.arange(60) % 6
    counts = (rng.random((60, 90)) < np.where(group[:, None] == np.arange(90)[None, :] % 6, 0.9, 0.02)).astype(float)
    feature = pp.atac_lsi_features(sp.csr_matrix(counts), n_components=4, min_fraction=0.0)
    binary = (counts > 0).astype(float)
    u, s, vt = np.linalg.svd(pp.tfidf(sp.csr_matrix(binary)).toarray(), full_matrices=False)
    u, _ = svd_flip(u, vt)
    u = u[:, :5]
    expected = (u - u.mean(axis=1, keepdims=True)) / u.std(axis=1, ddof=1, keepdims=True)
    assert feature.x.shape == (60, 4)
    np.testing.assert_allclose(feature.x, expected[:, 1:], atol=1e-3)


def test_atac_drops_rare_peaks():
    counts = (np.random.default_rng(0).random((400, 12)) < 0.5).astype(float)
    counts[:, 0] = 1
    counts[:, 3] = 0
    counts[:2, 3] = 2  # open in 2 of 400 spots = ⌈0.005 · 400⌉: kept
    counts[:, 7] = 0
    counts[5, 7] = 1  # open in 1 spot: dropped
    feature = pp.atac_lsi_features(sp.csr_matrix(counts), n_components=3)
    assert 7 not in feature.features and 3 in feature.features and len(feature.features) == 11


def test_rna_pca_filters_genes_and_projects_back():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(60, 30)).astype(float)
    counts[:, 5] = 0
    counts[:4, 5] = 1  # detected in 4 spots < min_cells = 10
    feature = pp.rna_pca_features(sp.csr_matrix(counts), n_pcs=20)
    assert 5 not in feature.features and len(feature.features) == 29
    logged = pp.log_normalise(sp.csr_matrix(counts[:, feature.features])).toarray()
    centred = logged - logged.mean(axis=0)
    np.testing.assert_allclose(feature.x @ feature.loadings.T + feature.mean,
                               centred @ feature.loadings @ feature.loadings.T + logged.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(np.abs(feature.x[:, 0]),
                               np.abs(np.linalg.svd(centred, full_matrices=False)[0][:, 0]
                                      * np.linalg.svd(centred, compute_uv=False)[0]), rtol=1e-3)


# --- matching spots across modalities ---------------------------------------------------------------------------

def _pair(n=60, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n)]
    xy = rng.uniform(0, 10, size=(n, 2))
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(2, size=(n, 40)).astype(np.float32)), obs=pd.DataFrame(index=names))
    adt = ad.AnnData(sp.csr_matrix(rng.poisson(5, size=(n, 8)).astype(np.float32)), obs=pd.DataFrame(index=names))
    rna.obsm["spatial"] = xy
    adt.obsm["spatial"] = xy.copy()
    return rna, adt


def test_reordered_spots_are_matched_by_name():
    rna, adt = _pair()
    shuffled = adt[np.random.default_rng(1).permutation(adt.n_obs)].copy()
    pair = modalities.pair_modalities({"adt": shuffled, "rna": rna})
    assert pair.names == ["rna", "adt"] and pair.kinds == ["rna", "adt"]
    assert list(pair.spot_names) == list(rna.obs_names)
    np.testing.assert_array_equal(pair.counts[1].toarray(), adt.X.toarray())


def test_partial_overlap_is_logged_and_small_overlap_refused(caplog):
    rna, adt = _pair()
    with caplog.at_level(logging.WARNING, logger="spatialdomains"):
        pair = modalities.pair_modalities({"rna": rna, "adt": adt[:50].copy()})
    assert len(pair.spot_names) == 50 and "not in every modality" in caplog.text
    other = adt.copy()
    other.obs_names = [f"adt-{name}" for name in adt.obs_names]
    with pytest.raises(InputError, match="share only 0 spot names"):
        modalities.pair_modalities({"rna": rna, "adt": other})


def test_disagreeing_coordinates_unknown_kinds_and_normalised_values_are_refused():
    rna, adt = _pair()
    moved = adt.copy()
    moved.obsm["spatial"][3] += 5
    with pytest.raises(InputError, match="places 1 spots elsewhere"):
        modalities.pair_modalities({"rna": rna, "adt": moved})
    with pytest.raises(InputError, match="cannot tell what modality 'foo' holds"):
        modalities.pair_modalities({"rna": rna, "foo": adt})
    assert modalities.pair_modalities({"rna": rna, "foo": adt}, modality_kinds={"foo": "adt"}).kinds[1] == "adt"
    logged = adt.copy()
    logged.X = logged.X * 0.5
    with pytest.raises(InputError, match="non-integer values"):
        modalities.pair_modalities({"rna": rna, "adt": logged})


# --- SpaMI's parts ----------------------------------------------------------------------------------------------

def test_readout_and_gcn_operators_match_dense_references():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    coordinates = np.random.default_rng(0).uniform(0, 20, size=(300, 2))
    neighbours = sd.graph.nearest_other_spots(coordinates, 3)
    h = torch.randn(300, 8)
    mask = np.zeros((300, 300))
    mask[np.arange(300), np.arange(300)] = 1
    mask[np.repeat(np.arange(300), 3), neighbours.ravel()] = 1
    dense = torch.as_tensor(mask / mask.sum(axis=1, keepdims=True), dtype=torch.float32)
    adjacency = sd.graph.adjacency_from_neighbours(neighbours)
    graph = spami._Graph(adjacency, neighbours)
    readout = spami.SparseOperator(graph.readout, torch.device("cpu"))
    torch.testing.assert_close(readout @ h, dense @ h)
    h.requires_grad_(True)
    (readout @ h).pow(2).sum().backward()
    expected = dense.T @ (2 * (dense @ h.detach()))
    torch.testing.assert_close(h.grad, expected)

    coo = adjacency.tocoo()
    edges, weights = gcn_norm(torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long), None, 300,
                              add_self_loops=True)
    reference = torch.zeros(300, 300).index_put_((edges[1], edges[0]), weights, accumulate=True)
    torch.testing.assert_close(spami.SparseOperator(graph.propagation, torch.device("cpu")) @ h.detach(),
                               reference @ h.detach())


def test_dgi_loss_matches_binary_cross_entropy_by_hand():
    torch.manual_seed(0)
    discriminator = spami.Discriminator(4)
    h, h_tilde, g, g_tilde = (torch.randn(5, 4) for _ in range(4))

    def bce(real, fake):
        return -(torch.log(torch.sigmoid(real)).sum() + torch.log(1 - torch.sigmoid(fake)).sum()) / 10

    score = lambda a, b: (a @ discriminator.weight.detach() * b).sum(1) + discriminator.bias.detach()  # noqa: E731
    expected = bce(score(h, g), score(h_tilde, g)) + bce(score(h_tilde, g_tilde), score(h, g_tilde))
    torch.testing.assert_close(spami.dgi_loss(discriminator, h, h_tilde, g, g_tilde).detach(), expected)


def test_dgi_labels_are_made_where_the_logits_are(monkeypatch):
    """No label tensor is built on the CPU and copied to the device at every step."""
    torch.manual_seed(0)
    discriminator = spami.Discriminator(4)
    h, h_tilde, g, g_tilde = (torch.randn(5, 4) for _ in range(4))

    def cpu_first(*args, **kwargs):
        raise AssertionError("labels built with torch.ones/torch.zeros on the default device")

    monkeypatch.setattr(torch, "ones", cpu_first)
    monkeypatch.setattr(torch, "zeros", cpu_first)
    assert torch.isfinite(spami.dgi_loss(discriminator, h, h_tilde, g, g_tilde))


def test_attention_weights_are_positive_and_sum_to_one():
    attention = spami.ModalityAttention(6)
    fused, weights = attention([torch.randn(50, 6) * 3, torch.randn(50, 6)])
    assert weights.shape == (50, 2) and torch.all(weights > 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(50))
    assert fused.shape == (50, 6)


# --- tools end to end -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rna_adt():
    return sd.datasets.simulate_multiomics(500, 4, second="adt", seed=1)


def _ari(mdata, key="domain"):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(mdata.obs["ground_truth"].astype(str), mdata.obs[key].astype(str))


def test_spami_outputs_and_reproducibility(rna_adt):
    modal = {name: rna_adt[name].copy() for name in rna_adt.mod}
    before = {name: part.X.copy() for name, part in modal.items()}
    first = sd.tl.spami(modal, n_epochs=30, progress=False, random_state=3)
    second = sd.tl.spami(modal, n_epochs=30, progress=False, random_state=3)
    other = sd.tl.spami(modal, n_epochs=30, progress=False, random_state=4)
    for key in ("X_spami", "X_spami_rna", "X_spami_adt", "spami_attention", "spami_recon_rna", "spami_recon_adt",
                "spami_denoised_rna"):
        assert key in first.obsm and np.all(np.isfinite(first.obsm[key]))
    np.testing.assert_array_equal(first.obsm["X_spami"], second.obsm["X_spami"])
    assert not np.allclose(first.obsm["X_spami"], other.obsm["X_spami"])
    weights = first.obsm["spami_attention"]
    assert np.all(weights > 0) and np.allclose(weights.sum(axis=1), 1, atol=1e-5)
    record = first.uns["spatialdomains"]["spami"]
    assert list(record["modalities"]) == ["rna", "adt"] and record["training"]["epochs_run"] == 30
    assert first.obsm["spami_denoised_rna"].shape[1] == len(record["features"]["rna"])
    for name, part in modal.items():  # the user's AnnData are untouched
        assert (part.X != before[name]).nnz == 0 and "X_spami" not in part.obsm


def test_spots_missing_from_a_modality_get_no_embedding(rna_adt):
    modal = {"rna": rna_adt["rna"].copy(), "adt": rna_adt["adt"][20:].copy()}
    result = sd.tl.spami(modal, n_epochs=5, progress=False)
    missing = ~np.isin(result.obs_names, modal["adt"].obs_names)
    assert missing.sum() == 20
    assert np.all(np.isnan(result.obsm["X_spami"][missing])) and np.all(np.isfinite(result.obsm["X_spami"][~missing]))


def test_attention_shifts_to_the_informative_modality(rna_adt):
    """With the protein rows shuffled (noise, no spatial signal), the weight moves to RNA."""
    rna, adt = rna_adt["rna"].copy(), rna_adt["adt"].copy()
    adt.X = adt.X[np.random.default_rng(0).permutation(adt.n_obs)]
    clean = sd.tl.spami({"rna": rna, "adt": rna_adt["adt"].copy()}, n_epochs=200, progress=False)
    noisy = sd.tl.spami({"rna": rna, "adt": adt}, n_epochs=200, progress=False)
    assert noisy.obsm["spami_attention"][:, 0].mean() > clean.obsm["spami_attention"][:, 0].mean()
    assert noisy.obsm["spami_attention"][:, 0].mean() > 0.5


def test_rna_atac_end_to_end():
    mdata = sd.datasets.simulate_multiomics(600, 4, second="atac", seed=2, fold_change=5)
    assert set(mdata.mod) == {"rna", "atac"}
    result = sd.find_domains(mdata, method="spami", n_domains=4, n_epochs=20, cluster_method="kmeans",
                             progress=False)
    assert result is mdata and result.obs["domain"].cat.categories.size == 4
    assert result.obsm["X_spami_atac"].shape == (mdata.n_obs, 64)
    assert "spami_denoised_atac" not in result.obsm  # no back-projection for ATAC
    assert list(result.uns["spatialdomains"]["spami"]["kinds"]) == ["rna", "atac"]


def test_baseline_uses_both_modalities(rna_adt):
    both = sd.find_domains(rna_adt, method="baseline", n_domains=4, cluster_method="kmeans", refine=False)
    rna_only = sd.find_domains(rna_adt["rna"].copy(), method="baseline", n_domains=4, cluster_method="kmeans",
                               refine=False)
    assert _ari(both) > 0.8
    assert _ari(both) > _ari(rna_only) + 0.2  # RNA alone cannot tell the domain pairs apart


def test_single_modality_and_refusals(rna_adt):
    adt = rna_adt["adt"].copy()
    result = sd.tl.spami(adt, n_epochs=5, progress=False, modality_kinds=None)
    assert result is adt and np.allclose(adt.obsm["spami_attention"], 1)
    with pytest.raises(InputError, match="one section"):
        sd.find_domains([rna_adt["rna"], rna_adt["rna"]], method="spami")
    with pytest.raises(InputError, match="at most two"):
        sd.tl.spami({"rna": rna_adt["rna"], "adt": adt, "protein": adt})


def test_published_leiden_protocol_finds_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 64))
    truth = np.repeat(np.arange(3), 150)
    adata = ad.AnnData(np.zeros((450, 1), dtype=np.float32))
    adata.obsm["X_spami"] = centres[truth] + rng.normal(size=(450, 64))
    sd.tl.leiden(adata, resolution=0.4)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, adata.obs["domain"].astype(str)) == 1.0
    record = adata.uns["spatialdomains"]["cluster"]
    assert record["n_domains"] == 3 and record["details"]["resolution"] == 0.4
    with pytest.raises(InputError, match="resolution must be positive"):
        sd.tl.leiden(adata, resolution=0)
