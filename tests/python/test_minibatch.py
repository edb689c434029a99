"""The large-data training mode: batches, neighbourhoods, the loss on a batch, the mode's choice and its record."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import spatialdomains as sd
from spatialdomains.errors import InputError
from spatialdomains.graph import knn_graph
from spatialdomains.methods import StaigConfig
from spatialdomains.methods import SpotscapeConfig
from spatialdomains.models import minibatch, spotscape, staig

from conftest import python_environment


@pytest.fixture(scope="module")
def cells():
    adata = sd.datasets.simulate_cells(3000, 4, 8, 200, seed=3)
    from spatialdomains import pp

    x, _ = pp.staig_features(adata.X, n_top_genes=150)
    return x, knn_graph(adata.obsm["spatial"], 5), adata.obsm["spatial"]


def _train(cells, training, epochs=3, batch_size=2048, **config):
    x, adjacency, coordinates = cells
    return staig.train_staig(x, adjacency, StaigConfig(n_epochs=epochs, **config), device=torch.device("cpu"),
                             random_state=4, progress=False, training=training,
                             batch=minibatch.BatchSettings(batch_size), coordinates=coordinates)


@pytest.mark.parametrize("config", [{}, {"n_layers": 2, "positives": "view"}])
def test_one_batch_holding_every_spot_trains_exactly_as_full_batch(cells, config):
    """Same seed, same views and masks: the batch's neighbourhood code must reproduce the full-batch losses."""
    full = _train(cells, "full", **config)
    batched = _train(cells, "minibatch", batch_size=len(cells[2]), **config)
    assert batched.record["steps_per_epoch"] == 1 and batched.record["mode"] == "minibatch"
    np.testing.assert_allclose(batched.record["loss_history"], full.record["loss_history"], rtol=1e-5)
    np.testing.assert_allclose(batched.embedding, full.embedding, atol=1e-4)


def test_several_slices_in_one_batch_train_as_full_batch_with_same_slice_negatives():
    """Integration: slices contiguous, negatives from the anchor's own slice; the batch path must agree."""
    from spatialdomains import pp

    adata = sd.datasets.simulate_cells(1200, 3, 6, 100, seed=8)
    x, coordinates = pp.staig_features(adata.X, n_top_genes=80)[0], adata.obsm["spatial"]
    adjacency = knn_graph(coordinates, 5)
    half = x.shape[0] // 2
    block = sp.block_diag([adjacency[:half, :half], adjacency[half:, half:]], format="csr")
    runs = [staig.train_staig(x, block, StaigConfig(n_epochs=3), device=torch.device("cpu"), random_state=2,
                              progress=False, slice_bounds=[(0, half), (half, x.shape[0])], training=mode,
                              batch=minibatch.BatchSettings(x.shape[0]), coordinates=coordinates)
            for mode in ("full", "minibatch")]
    np.testing.assert_allclose(runs[1].record["loss_history"], runs[0].record["loss_history"], rtol=1e-5)
    small = staig.train_staig(x, block, StaigConfig(n_epochs=2), device=torch.device("cpu"), random_state=2,
                              progress=False, slice_bounds=[(0, half), (half, x.shape[0])], training="minibatch",
                              batch=minibatch.BatchSettings(150), coordinates=coordinates)
    assert small.record["steps_per_epoch"] >= 4 and np.isfinite(small.embedding).all()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_the_encoder_on_a_neighbourhood_equals_the_full_graph_encoder(cells, n_layers):
    x, adjacency, _ = cells
    torch.manual_seed(0)
    model = staig.StaigNet(x.shape[1], 16, n_layers)
    pairs = sd.graph.undirected_edges(adjacency)
    edges = torch.as_tensor(np.hstack([pairs.T, pairs.T[::-1]]).copy())
    expected = model.encode(torch.as_tensor(x.toarray()), edges)
    hoods = minibatch.Neighbourhoods(adjacency)
    propagation = minibatch.normalised_adjacency(x.shape[0], pairs)
    anchors = np.sort(np.random.default_rng(0).choice(x.shape[0], 300, replace=False))
    sets = [anchors]
    for _ in range(n_layers):
        sets.append(hoods.grow(sets[-1]))
    blocks = [hoods.block(propagation, sets[i], sets[i + 1]) for i in reversed(range(n_layers))]
    got = model.encode_blocks(x[sets[-1]], blocks)
    np.testing.assert_allclose(got.detach().numpy(), expected[anchors].detach().numpy(), atol=1e-5)
    assert len(sets[-1]) < x.shape[0]  # a neighbourhood, not the whole graph


# --- Spotscape ---------------------------------------------------------------------------------------------------

def _spotscape(x, adjacency, coordinates, training, *, batch_size, bounds=None, epochs=3, **config):
    settings = SpotscapeConfig(n_epochs=epochs, learning_rate=1e-3, **config)
    return spotscape.train_spotscape(x, adjacency, settings, slice_bounds=bounds, n_domains=3,
                                     device=torch.device("cpu"), random_state=5, progress=False, training=training,
                                     batch=minibatch.BatchSettings(batch_size), coordinates=coordinates)


@pytest.mark.parametrize("slices", [1, 2])
def test_spotscape_one_batch_holding_every_spot_trains_exactly_as_full_batch(slices):
    """Same seed, same views (dropped edges, masked genes): the neighbourhood code must reproduce full batch's
    losses, with two slices also the similarity-scale and prototype terms (warm-up at epoch 1)."""
    from spatialdomains import pp

    adata = sd.datasets.simulate_visium(600, 3, seed=6)
    x, _ = pp.spotscape_features(adata.X, n_top_genes=300)
    coordinates = adata.obsm["spatial"]
    adjacency = knn_graph(coordinates, 6)
    bounds = None
    if slices == 2:
        half = x.shape[0] // 2
        adjacency = sp.block_diag([adjacency[:half, :half], adjacency[half:, half:]], format="csr")
        bounds = [(0, half), (half, x.shape[0])]
    runs = [_spotscape(x, adjacency, coordinates, mode, batch_size=x.shape[0], bounds=bounds, warmup_epochs=1)
            for mode in ("full", "minibatch")]
    assert runs[1].record["mode"] == "minibatch" and runs[1].record["steps_per_epoch"] == 1
    np.testing.assert_allclose(runs[1].record["loss_history"], runs[0].record["loss_history"], rtol=1e-5)
    # The GCN biases before batch norm have no gradient in exact arithmetic; Adam scales their float noise up
    # to full steps, which batch norm cancels in training but its running statistics do not in evaluation.
    np.testing.assert_allclose(runs[1].embedding, runs[0].embedding, atol=2e-2)
    assert np.corrcoef(runs[1].embedding.ravel(), runs[0].embedding.ravel())[0, 1] > 0.9999
    np.testing.assert_allclose(runs[1].denoised, runs[0].denoised, atol=5e-2)


def test_spotscape_minibatch_learns_domains_and_drops_denoised_values_it_cannot_hold(monkeypatch):
    adata = sd.datasets.simulate_visium(1200, 4, seed=9)
    sd.tl.spotscape(adata, training="minibatch", batch_size=256, n_epochs=40, progress=False)
    training = adata.uns["spatialdomains"]["spotscape"]["training"]
    assert training["mode"] == "minibatch" and training["steps_per_epoch"] >= 4 and training["denoised_kept"]
    sd.tl.cluster(adata, use_rep="X_spotscape", n_domains=4, method="kmeans")
    assert sd.metrics.ari(adata.obs["ground_truth"], adata.obs["domain"]) > 0.5
    monkeypatch.setattr(spotscape, "DENOISED_LIMIT", 1000)  # the name spotscape's model reads
    sd.tl.spotscape(adata, training="minibatch", batch_size=256, n_epochs=1, progress=False)
    assert "spotscape_denoised" not in adata.obsm and "spotscape_denoised" not in adata.layers
    assert adata.uns["spatialdomains"]["spotscape"]["training"]["denoised_kept"] is False
    with pytest.raises(InputError, match="were not kept"):
        sd.tl.impute(adata)


def _spami_parts(n_spots=300, seed=0):
    rng = np.random.default_rng(seed)
    coordinates = rng.uniform(0, 20, size=(n_spots, 2))
    neighbours = sd.graph.nearest_other_spots(coordinates, 3)
    features = [rng.normal(size=(n_spots, 12)).astype(np.float32), rng.normal(size=(n_spots, 5)).astype(np.float32)]
    return features, sd.graph.adjacency_from_neighbours(neighbours), neighbours, coordinates


def test_spami_one_batch_holding_every_spot_trains_exactly_as_full_batch():
    """Same seed, same corruption (one row permutation per modality and epoch): the four-hop neighbourhood code
    must reproduce full batch's losses and outputs (dropout off, as its masks are drawn per row)."""
    from spatialdomains.methods import SpamiConfig
    from spatialdomains.models import spami

    features, adjacency, neighbours, coordinates = _spami_parts()
    config = SpamiConfig(n_epochs=5, dropout=0.0)
    runs = [spami.train_spami(features, adjacency, neighbours, config, device=torch.device("cpu"), progress=False,
                              training=mode, batch=minibatch.BatchSettings(300, 300), coordinates=coordinates)
            for mode in ("full", "minibatch")]
    assert runs[1].record["mode"] == "minibatch" and runs[1].record["steps_per_epoch"] == 1
    np.testing.assert_allclose(runs[1].record["loss_history"], runs[0].record["loss_history"], rtol=1e-5)
    np.testing.assert_allclose(runs[1].embedding, runs[0].embedding, atol=1e-4)
    for mine, theirs in zip(runs[1].reconstructions, runs[0].reconstructions):
        np.testing.assert_allclose(mine, theirs, atol=1e-4)


def test_spami_minibatch_finds_the_domains_and_keeps_no_denoised_genes_it_cannot_hold(monkeypatch):
    mdata = sd.datasets.simulate_multiomics(1300, 4, seed=3)
    sd.find_domains(mdata, "spami", 4, training="minibatch", batch_size=256, n_epochs=30, cluster_method="kmeans",
                    progress=False)
    training = mdata.uns["spatialdomains"]["spami"]["training"]
    assert training["mode"] == "minibatch" and training["steps_per_epoch"] >= 5 and training["denoised_kept"]
    assert sd.metrics.ari(mdata.obs["ground_truth"], mdata.obs["domain"]) > 0.6
    assert "spami_denoised_rna" in mdata.obsm
    monkeypatch.setattr(sd.methods.spami, "DENOISED_LIMIT", 1000)
    sd.tl.spami(mdata, training="minibatch", batch_size=256, n_epochs=1, progress=False)
    assert "spami_denoised_rna" not in mdata.obsm and "spami_recon_rna" in mdata.obsm
    assert mdata.uns["spatialdomains"]["spami"]["training"]["denoised_kept"] is False
    with pytest.raises(InputError, match="were not kept: train again with at most [0-9,]+ genes"):
        sd.tl.impute(mdata, method="spami")
    with pytest.raises(InputError, match="were not kept"):
        sd.tl.decoded_features(mdata, method="spami")
    assert sd.tl.impute(mdata, method="spami", modality="adt").n_vars == mdata["adt"].n_vars  # proteins are kept


def test_an_epoch_visits_every_spot_once_in_batches_of_whole_patches(cells):
    coordinates = cells[2]
    patches = minibatch.spatial_patches(coordinates, None, 64)
    sizes = np.bincount(patches)
    assert 30 <= sizes.mean() <= 100 and len(sizes) > 20
    batches = minibatch.PatchBatches(patches, 500, np.random.default_rng(1))
    first, second = list(batches), list(batches)
    for epoch in (first, second):
        spots = np.concatenate(epoch)
        np.testing.assert_array_equal(np.sort(spots), np.arange(len(coordinates)))
        assert all(len(np.unique(patches[b])) == len(np.unique(patches[b])) for b in epoch)
        assert all(len(b) >= 500 for b in epoch[:-1])
        for b in epoch:  # whole patches only
            assert np.array_equal(np.bincount(patches[b], minlength=len(sizes))[np.unique(patches[b])],
                                  sizes[np.unique(patches[b])])
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))  # a new order each epoch


def test_slices_are_patched_separately_and_negatives_stay_in_their_slice():
    coordinates = np.random.default_rng(0).uniform(0, 100, size=(400, 2))
    codes = np.repeat([0, 1], 200)
    patches = minibatch.spatial_patches(np.vstack([coordinates[:200], coordinates[:200]]), codes, 20)
    assert not set(patches[:200]) & set(patches[200:])


def test_minibatch_training_learns_and_records_its_settings(cells):
    result = _train(cells, "minibatch", epochs=6, batch_size=512)
    record = result.record
    assert record["mode"] == "minibatch" and record["batch_size"] == 512 and record["steps_per_epoch"] >= 4
    assert record["optimiser_steps"] == record["steps_per_epoch"] * 6  # counted, not estimated
    assert record["loss_history"][-1] < record["loss_history"][0]
    assert result.embedding.shape == (3000, 64) and np.isfinite(result.embedding).all()


def test_auto_chooses_full_batch_up_to_the_limit_and_minibatches_above():
    assert minibatch.choose_training("auto", minibatch.FULL_BATCH_LIMIT) == "full"
    assert minibatch.choose_training("auto", minibatch.FULL_BATCH_LIMIT + 1) == "minibatch"
    assert minibatch.choose_training("full", 10**7) == "full"
    assert minibatch.choose_training("minibatch", 10) == "minibatch"
    # without n_epochs, about DEFAULT_STEPS steps, never more epochs than full batch
    assert minibatch.default_epochs(1_000_000, 2048, 400) == 4
    assert minibatch.default_epochs(50_000, 2048, 400) == 80
    assert minibatch.default_epochs(3000, 2048, 400) == 400


def test_epochs_meant_for_full_batch_are_flagged_in_minibatches(caplog):
    """A preset's epochs (e.g. SpaMI's thymus, 600) are full-batch epochs: at a million cells in mini-batches they
    would be 293,400 steps, so the run says so (and still does what was asked)."""
    coordinates = np.zeros((2, 2))
    settings = minibatch.BatchSettings()
    assert minibatch.training_epochs(600, "minibatch", 1_000_000, settings, 1000, coordinates) == 600
    assert "n_epochs=600 in mini-batches of 2048 is 293,400 optimiser steps" in caplog.text
    caplog.clear()
    assert minibatch.training_epochs(600, "full", 1_000_000, settings, 1000, coordinates) == 600
    assert minibatch.training_epochs(4, "minibatch", 1_000_000, settings, 1000, coordinates) == 4
    assert "optimiser steps" not in caplog.text


def test_the_run_records_the_mode_and_refuses_what_does_not_apply(small_sample):
    adata = small_sample.copy()
    sd.tl.staig(adata, n_epochs=2, training="minibatch", batch_size=128, progress=False)
    training = adata.uns["spatialdomains"]["staig"]["training"]
    assert training["mode"] == "minibatch" and training["batch_size"] == 128
    sd.tl.staig(adata, n_epochs=2, progress=False)
    assert adata.uns["spatialdomains"]["staig"]["training"]["mode"] == "full"
    with pytest.raises(InputError, match="training='fast'.*auto, full, minibatch"):
        sd.tl.staig(adata, training="fast")
    with pytest.raises(InputError, match="batch_size=0"):
        sd.tl.staig(adata, training="minibatch", batch_size=0)
    with pytest.raises(InputError, match="does not apply to Baseline"):
        sd.tl.baseline(sd.datasets.simulate_multiomics(100, 2, seed=1), training="minibatch")


def test_gene_adaptive_edge_weights_stay_sparse_on_large_inputs(monkeypatch, cells):
    """Above the full-batch limit the gene-adaptive PCA runs on the sparse matrix; it finds the same components."""
    x, adjacency, _ = cells
    dense = staig.edge_drop_probabilities(x.toarray(), adjacency, "gene_adaptive")
    monkeypatch.setattr(minibatch, "FULL_BATCH_LIMIT", 100)
    sparse = staig.edge_drop_probabilities(sp.csr_matrix(x), adjacency, "gene_adaptive")
    np.testing.assert_allclose(sparse, dense, atol=2e-3)


LIMITED_RUN = r"""
import re, resource, sys
import numpy as np
import spatialdomains as sd

adata = sd.datasets.simulate_cells(100_000, 4, 8, 5000, seed=0, mean_transcripts=100)
used = int(re.search(r"VmData:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
dense = adata.n_obs * 3000 * 4  # the features, spots x 3000 genes, as one dense float32 array
limit = used + int(0.7 * dense)
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
try:
    np.ones((adata.n_obs, 3000), dtype=np.float32)
    sys.exit("the memory limit would not catch a dense copy of the features")
except MemoryError:
    pass
sd.tl.staig(adata, n_epochs=1, training="minibatch", progress=False)
assert np.isfinite(adata.obsm["X_staig"]).all()
print("trained within", round((limit - used) / 2**20), "MB more")
"""


def test_large_data_mode_holds_no_dense_spots_by_genes_and_no_spots_by_spots_object():
    """100,000 cells under a memory limit that a dense copy of the features (1.2 GB) would exceed (spots × spots:
    40 GB); preprocessing, the graph, an epoch and the embedding must fit."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LIMITED_RUN], capture_output=True, text=True, timeout=600,
                          env=python_environment())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained within" in done.stdout
