"""The chunked neighbour-contrastive loss against the direct N×N computation, in every negative mode."""
import numpy as np
import pytest
import torch

from spatialdomains.graph import knn_graph, undirected_edges
from spatialdomains.models import staig


def dense_reference(h1, h2, edges_1, edges_2, tau, labels=None, slices=None):
    """The loss of the method note §6 written directly with N×N matrices (small N only)."""
    u, v = torch.nn.functional.normalize(h1, dim=1), torch.nn.functional.normalize(h2, dim=1)
    n = u.shape[0]

    def adjacency(edges):
        a = torch.zeros(n, n, dtype=u.dtype)
        a[edges[0], edges[1]] = 1
        return a

    a1, a2 = adjacency(edges_1), adjacency(edges_2)
    negatives = ~torch.eye(n, dtype=torch.bool)
    if labels is not None:
        negatives &= labels[:, None] != labels[None, :]
    if slices is not None:
        negatives &= slices[:, None] == slices[None, :]

    def direction(a, b, same_view, cross_view):
        f_aa, f_ab = torch.exp(a @ a.T / tau), torch.exp(a @ b.T / tau)
        positives = f_ab.diag() + (same_view * f_aa).sum(1) + (cross_view * f_ab).sum(1)
        count = same_view.sum(1) + cross_view.sum(1) + 1
        denominator = f_ab.diag() + (negatives * (f_aa + f_ab)).sum(1)
        return -torch.log(positives / (count * denominator))

    return 0.5 * (direction(u, v, a1, a2) + direction(v, u, a2, a1)).mean()


def _setup(n, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    points = np.random.default_rng(seed).random((n, 2))
    pairs = torch.as_tensor(undirected_edges(knn_graph(points, 5)))
    edges = torch.cat([pairs.T, pairs.T.flip(0)], dim=1)
    h1 = torch.randn(n, 16, dtype=dtype, generator=generator, requires_grad=True)
    h2 = torch.randn(n, 16, dtype=dtype, generator=generator, requires_grad=True)
    return h1, h2, pairs, edges


MODES = ["all", "debiased", "slices"]


def _mode_arguments(mode, n):
    if mode == "debiased":
        labels = torch.as_tensor(np.random.default_rng(1).integers(0, 6, n))
        return {"pseudo_labels": labels}, {"labels": labels}
    if mode == "slices":
        cut = n // 3
        slices = torch.as_tensor(np.r_[np.zeros(cut), np.ones(n - cut)])
        return {"slice_bounds": [(0, cut), (cut, n)]}, {"slices": slices}
    return {}, {}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("budget_mb", [0.02, 256.0], ids=["recomputed-blocks", "kept-blocks"])
@pytest.mark.parametrize("tau", [0.5, 0.02], ids=["tau0.5", "tau0.02-shifted"])
def test_chunked_equals_dense_float64(mode, budget_mb, tau):
    n = 400
    h1, h2, _, edges = _setup(n, torch.float64)
    chunked_args, dense_args = _mode_arguments(mode, n)
    loss = staig.neighbour_contrastive_loss(h1, h2, (edges, edges), tau, memory_budget_mb=budget_mb,
                                            **chunked_args)
    reference = dense_reference(h1, h2, edges, edges, tau, **dense_args)
    grads = torch.autograd.grad(loss, (h1, h2))
    reference_grads = torch.autograd.grad(reference, (h1, h2))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_chunking_really_splits_rows():
    blocks = list(staig._row_blocks([(0, 400)], 8, 0.02))
    assert len(blocks) > 10 and blocks[-1][0].stop == 400


@pytest.mark.parametrize("mode", MODES)
def test_chunked_equals_dense_float32(mode):
    n = 600
    h1, h2, _, edges = _setup(n, torch.float32, seed=3)
    chunked_args, dense_args = _mode_arguments(mode, n)
    loss = staig.neighbour_contrastive_loss(h1, h2, (edges, edges), 10.0, memory_budget_mb=0.05, **chunked_args)
    reference = dense_reference(h1.double(), h2.double(), edges, edges, 10.0, **dense_args)
    grads = torch.autograd.grad(loss, (h1, h2))
    reference_grads = torch.autograd.grad(reference, (h1, h2))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad.double(), expected.double(), rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_view_positives_follow_the_paper_text():
    h1, h2, pairs, edges = _setup(300, torch.float64)
    torch.manual_seed(0)
    view_1 = staig.sample_view_edges(pairs, torch.full((len(pairs),), 0.3, dtype=torch.float64))
    view_2 = staig.sample_view_edges(pairs, torch.full((len(pairs),), 0.3, dtype=torch.float64))
    loss = staig.neighbour_contrastive_loss(h1, h2, (view_1, view_2), 0.5)
    assert loss.item() == pytest.approx(dense_reference(h1, h2, view_1, view_2, 0.5).item(), rel=1e-10)


def test_edge_drop_rate_and_symmetry():
    points = np.random.default_rng(0).random((2000, 2))
    adjacency = knn_graph(points, 5)
    pairs = torch.as_tensor(undirected_edges(adjacency))
    probability = torch.as_tensor(staig.edge_drop_probabilities(np.zeros((2000, 3)), adjacency, "fixed", 0.2))
    torch.manual_seed(0)
    view = staig.sample_view_edges(pairs, probability)
    kept_pairs = view.shape[1] // 2
    expected = len(pairs) * (1 - probability.mean().item())
    sigma = np.sqrt(len(pairs) * 0.2 * 0.8)
    assert abs(kept_pairs - expected) < 3 * sigma
    as_set = set(map(tuple, view.T.tolist()))
    assert all((j, i) in as_set for i, j in as_set)  # both directions of each kept edge


def test_adaptive_edge_probabilities_are_symmetric_per_edge_and_near_inverse_degree():
    rng = np.random.default_rng(0)
    points = rng.random((500, 2))
    x = rng.random((500, 50)).astype(np.float32)
    adjacency = knn_graph(points, 5)
    probability = staig.edge_drop_probabilities(x, adjacency, "gene_adaptive")
    assert probability.shape == (len(undirected_edges(adjacency)),)
    assert np.all(probability >= 0) and np.all(probability <= 1)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    assert probability.mean() == pytest.approx(np.mean(1 / degree), rel=0.2)


def test_gene_mask_through_the_weight_equals_masking_the_input():
    torch.manual_seed(0)
    layer = staig.GCNLayer(30, 8)
    x = torch.rand(50, 30)
    points = np.random.default_rng(0).random((50, 2))
    pairs = torch.as_tensor(undirected_edges(knn_graph(points, 4)))
    edges = torch.cat([pairs.T, pairs.T.flip(0)], dim=1)
    mask = staig.sample_gene_mask(30, 0.3, torch.device("cpu"))
    assert 0 < mask.sum() < 30
    torch.testing.assert_close(layer(x, edges, mask), layer(x * mask, edges))
    from torch_geometric.nn import GCNConv

    conv = GCNConv(30, 8)
    with torch.no_grad():
        conv.lin.weight.copy_(layer.weight.T)
        conv.bias.copy_(layer.bias)
    torch.testing.assert_close(layer(x, edges), conv(x, edges), rtol=1e-5, atol=1e-6)
