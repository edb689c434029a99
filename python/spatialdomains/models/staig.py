"""STAIG (Yang et al., Nat. Commun. 2025): graph contrastive learning on a spatial kNN graph.

As specified in the method note (``shared/methods/staig.md``): a one-layer GCN encoder with PReLU and a
two-layer projection head, two augmented views per epoch (edge dropping, gene masking) and the
neighbour-contrastive loss. With image features (``spatialdomains.image``), edges between spots that look
different are dropped more often and, on one slice, spots sharing an image pseudo-label leave each other's
negatives (debiasing). The loss denominators are sums over all spots; they are computed in row blocks
whose size follows a memory budget, with a hand-written backward pass that recomputes each block, so memory
stays O(N · block) while loss and gradients equal the direct computation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from ..graph import undirected_edges
from .layers import GCNLayer
from .minibatch import (BatchSettings, Neighbourhoods, PatchBatches, edge_matrix, normalised_adjacency, slice_bounds_in,
                        spatial_patches, sparse_times, training_epochs)
from .trainer import Trainer, dense_features, seed_everything


EDGE_DROP_MODES = ("fixed", "gene_adaptive", "image")


class StaigNet(nn.Module):
    """Encoder f (GCN → PReLU, optionally twice) and projection head g (Linear → ELU → Linear)."""

    def __init__(self, n_genes: int, hidden_dim: int = 64, n_layers: int = 1) -> None:
        super().__init__()
        dims = [n_genes, hidden_dim] if n_layers == 1 else [n_genes, 2 * hidden_dim, hidden_dim]
        self.convs = nn.ModuleList(GCNLayer(a, b) for a, b in zip(dims, dims[1:]))
        self.activation = nn.PReLU(init=0.25)  # one slope shared by the layers, as published
        self.projection = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, hidden_dim))

    def encode(self, x: torch.Tensor, edge_index: torch.Tensor, gene_mask: torch.Tensor | None = None) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = self.activation(conv(x, edge_index, gene_mask if i == 0 else None))
        return x

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, gene_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection(self.encode(x, edge_index, gene_mask))

    def encode_blocks(self, x_rows: sp.csr_matrix, blocks: list[sp.csr_matrix],
                      gene_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder on a batch's neighbourhood (large-data mode): ``x_rows`` the sparse features of the
        outermost nodes, ``blocks[l]`` the normalised adjacency from layer l's input nodes to its output nodes.
        Equals :meth:`encode` on those output nodes."""
        hidden = None
        for i, (conv, block) in enumerate(zip(self.convs, blocks)):
            weight = conv.weight if i > 0 or gene_mask is None else conv.weight * gene_mask[:, None]
            hidden = sparse_times(x_rows, weight) if i == 0 else hidden @ weight
            hidden = self.activation(sparse_times(block, hidden) + conv.bias)
        return hidden


# -------------------------------------------------------------------------------------------------------------
# Augmentation
# -------------------------------------------------------------------------------------------------------------

def edge_drop_probabilities(x: np.ndarray, adjacency: sp.spmatrix, mode: str = "fixed", rate: float = 0.2,
                            random_state: int = 0, image_features: np.ndarray | None = None) -> np.ndarray:
    """Removal probability of each undirected edge (in the order of :func:`graph.undirected_edges`).

    ``fixed``: ``rate`` for every edge (paper). ``image``: d_ij = ‖c_i − c_j‖ between image features,
    p_ij = d_ij / Σ_{k∈N(i)} d_ik (paper Eq. 4). ``gene_adaptive``: the published form: PCA-64 of z-scored
    expression, cosine distance δ, p_ij = exp(δ_ij) / Σ_{k∈N(i)} exp(δ_ik). Directed values are made symmetric,
    p_e = ½(p_ij + p_ji), so both directions of an edge share one probability whatever the node order.
    """
    pairs = undirected_edges(adjacency)
    if mode == "fixed":
        return np.full(len(pairs), rate, dtype=np.float32)
    coo = sp.coo_matrix(adjacency)
    if mode == "image":
        if image_features is None:
            raise InputError("edge_drop='image' needs image features (spatialdomains.tl.image_features)")
        features = np.asarray(image_features, dtype=np.float64)
        weights = np.linalg.norm(features[coo.row] - features[coo.col], axis=1)
    elif mode == "gene_adaptive":
        reduced = _expression_components(x, random_state)
        reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
        weights = np.exp(1.0 - np.sum(reduced[coo.row] * reduced[coo.col], axis=1))
    else:
        raise InputError(f"edge_drop must be one of {EDGE_DROP_MODES}, got '{mode}'")
    row_totals = np.bincount(coo.row, weights=weights, minlength=adjacency.shape[0])
    normalised = np.divide(weights, row_totals[coo.row], out=np.zeros_like(weights), where=row_totals[coo.row] > 0)
    directed = sp.csr_matrix((normalised, (coo.row, coo.col)), shape=adjacency.shape)
    both = np.asarray(directed[pairs[:, 0], pairs[:, 1]]).ravel() + np.asarray(directed[pairs[:, 1], pairs[:, 0]]).ravel()
    return np.clip(0.5 * both, 0.0, 1.0).astype(np.float32)


def _expression_components(x, random_state: int, n_components: int = 64) -> np.ndarray:
    """PCA of z-scored expression (the published gene-adaptive edge weights). A large sparse ``x`` stays sparse:
    scaled by each gene's standard deviation, centred implicitly by ARPACK."""
    from sklearn.decomposition import PCA

    from ..pp import column_std, zscore
    from .minibatch import FULL_BATCH_LIMIT

    n_components = min(n_components, *x.shape)
    if not sp.issparse(x) or x.shape[0] <= FULL_BATCH_LIMIT:
        standardised = zscore(x.toarray() if sp.issparse(x) else x)
        return PCA(n_components=n_components, random_state=random_state).fit_transform(standardised)
    n = x.shape[0]
    std = column_std(x) * np.sqrt((n - 1) / n)
    scaled = sp.csr_matrix(x @ sp.diags(np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)))
    n_components = min(n_components, min(x.shape) - 1)
    return PCA(n_components=n_components, svd_solver="arpack", random_state=random_state).fit_transform(scaled)


def image_pseudo_labels(image_features: np.ndarray, n_labels: int = 40, random_state: int = 0) -> np.ndarray:
    """k-means labels of the image features (Q = ``n_labels`` clusters): spots sharing one are not negatives."""
    from sklearn.cluster import KMeans

    n_labels = min(n_labels, len(image_features))
    return KMeans(n_clusters=n_labels, n_init=10, random_state=random_state).fit_predict(
        np.asarray(image_features, dtype=np.float64))


def sample_view_edges(pairs: torch.Tensor, drop_probability: torch.Tensor) -> torch.Tensor:
    """Keep each undirected edge iff u ≥ p (u ~ U(0, 1)); return both directions as an edge_index."""
    keep = torch.rand(pairs.shape[0], device=pairs.device) >= drop_probability
    kept = pairs[keep].T
    return torch.cat([kept, kept.flip(0)], dim=1)


def sample_gene_mask(n_genes: int, rate: float, device: torch.device) -> torch.Tensor:
    """A 0/1 vector dropping each gene with probability ``rate``; one mask is shared by every spot of a view."""
    return (torch.rand(n_genes, device=device) >= rate).to(torch.float32)


# -------------------------------------------------------------------------------------------------------------
# Loss
# -------------------------------------------------------------------------------------------------------------

def neighbour_contrastive_loss(
    h1: torch.Tensor,
    h2: torch.Tensor,
    positive_edges: tuple[torch.Tensor, torch.Tensor],
    tau: float,
    *,
    pseudo_labels: torch.Tensor | None = None,
    slice_bounds: list[tuple[int, int]] | None = None,
    memory_budget_mb: float = 256.0,
    n_anchors: int | None = None,
) -> torch.Tensor:
    """STAIG's neighbour-contrastive loss L = (1/2N) Σ_i [ℓ_i(h¹, h²) + ℓ_i(h², h¹)] (paper Eq. 11).

    ``positive_edges`` are the directed edge_index of the neighbourhoods N¹ and N² (both the full graph by
    default). Negatives are every other spot; with ``pseudo_labels``, spots sharing the anchor's label are
    removed from them (debiasing); with ``slice_bounds`` (contiguous slices), only the anchor's own slice counts.

    Large-data mode: the first ``n_anchors`` rows are a batch's anchors, the loss is theirs, and their negatives
    are the batch's other anchors; the rows after them are neighbours that serve as positives only.
    """
    u, v = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    n = u.shape[0] if n_anchors is None else n_anchors
    bounds = slice_bounds or [(0, n)]
    log_du, log_dv = _ChunkedLogDenominators.apply(u[:n], v[:n], tau, bounds, pseudo_labels, memory_budget_mb)
    edges_1, edges_2 = positive_edges
    log_pu = _log_mean_positive(u, v, edges_1, edges_2, tau)[:n]
    log_pv = _log_mean_positive(v, u, edges_2, edges_1, tau)[:n]
    return 0.5 * ((log_du - log_pu).mean() + (log_dv - log_pv).mean())


def _log_mean_positive(a: torch.Tensor, b: torch.Tensor, same_view_edges: torch.Tensor,
                       cross_view_edges: torch.Tensor, tau: float) -> torch.Tensor:
    """log(P_i / n_i) with P_i = f_ab(i,i) + Σ_{N_a(i)} f_aa(i,j) + Σ_{N_b(i)} f_ab(i,j), n_i = |N_a|+|N_b|+1."""
    n = a.shape[0]
    shift = _exp_shift(tau)
    shifted = lambda s: torch.exp(s / tau - shift)  # noqa: E731 - keeps exp bounded for small τ; added back below
    positives = shifted((a * b).sum(dim=1))
    count = torch.ones(n, device=a.device, dtype=a.dtype)
    for edges, other in ((same_view_edges, a), (cross_view_edges, b)):
        src, dst = edges
        similarity = (a.index_select(0, src) * other.index_select(0, dst)).sum(dim=1)
        positives = positives.index_add(0, src, shifted(similarity))
        count = count.index_add(0, src, torch.ones_like(src, dtype=a.dtype))
    return torch.log(positives) + shift - torch.log(count)


#: Blocks of about this many elements (8 MB in float32) stay in the CPU cache through matmul, exp and sums.
_CACHE_FRIENDLY_ELEMENTS = 2**21


def _row_block_size(n_columns: int, element_size: int, memory_budget_mb: float) -> int:
    """Rows per block: cache-friendly, and never more than the ~6 live |rows| × |columns| buffers of one
    block allow within the memory budget (0 MB still gives one row per block)."""
    n_columns = max(n_columns, 1)
    by_budget = int(memory_budget_mb * 2**20 // (6 * element_size * n_columns))
    return max(1, min(by_budget, _CACHE_FRIENDLY_ELEMENTS // n_columns))


def _row_blocks(bounds, element_size, memory_budget_mb):
    """(rows, cols) slice pairs covering each slice's square block of anchor × candidate spots."""
    for start, end in bounds:
        step = _row_block_size(end - start, element_size, memory_budget_mb)
        for first in range(start, end, step):
            yield slice(first, min(first + step, end)), slice(start, end)


def _exp_shift(tau: float) -> float:
    """Subtracted from s/τ before exp when e^{1/τ} (times N) could overflow; 0 otherwise (saves a pass)."""
    return 1.0 / tau if 1.0 / tau > 20.0 else 0.0


def _masked_block_weights(u_over_tau, u, v, rows, cols, shift, labels):
    """f_uu, f_vv, f_uv = exp(cos/τ − shift) of anchor ``rows`` against ``cols``, masked: self-pairs out of
    f_uu and f_vv; same-pseudo-label pairs out of all three, except the f_uv diagonal (an anchor's own other
    view is always a positive). ``u_over_tau`` holds u/τ and v/τ stacked, so each block is one GEMM."""
    n, offset = u.shape[0], rows.start - cols.start
    u_rows, v_rows = u_over_tau[rows], u_over_tau[n + rows.start:n + rows.stop]
    f_uu, f_vv, f_uv = u_rows @ u[cols].T, v_rows @ v[cols].T, u_rows @ v[cols].T
    for block in (f_uu, f_vv, f_uv):
        if shift:
            block.sub_(shift)
        block.exp_()
    f_uu.diagonal(offset).zero_()
    f_vv.diagonal(offset).zero_()
    if labels is not None:
        same = labels[rows, None] == labels[None, cols]
        diagonal = f_uv.diagonal(offset).clone()
        for block in (f_uu, f_vv, f_uv):
            block.masked_fill_(same, 0.0)
        f_uv.diagonal(offset).copy_(diagonal)
    return f_uu, f_vv, f_uv


class _ChunkedLogDenominators(torch.autograd.Function):
    """log D_i for both directions, computed block by block; backward recomputes each block (exact gradients).

    D^u_i = f_uv(i,i) + Σ_{j∈J_i} [f_uu(i,j) + f_uv(i,j)] and D^v_i likewise with u and v swapped. The negative
    sets are symmetric (j ∈ J_i ⇔ i ∈ J_j), so D^v takes column sums of the masked f_uv blocks, and f_uu, f_vv
    are symmetric, which lets the backward pass use row blocks only for them.
    """

    @staticmethod
    def forward(ctx, u, v, tau, bounds, labels, memory_budget_mb):
        n = u.shape[0]
        sum_u = torch.zeros(n, dtype=u.dtype, device=u.device)
        sum_v = torch.zeros(n, dtype=u.dtype, device=u.device)
        blocks = list(_row_blocks(bounds, u.element_size(), memory_budget_mb))
        shift = _exp_shift(tau)
        # When all blocks fit the budget, keep them for the backward pass instead of recomputing them.
        kept_bytes = 3 * u.element_size() * sum((r.stop - r.start) * (c.stop - c.start) for r, c in blocks)
        keep = kept_bytes <= memory_budget_mb * 2**20
        kept = []
        with torch.no_grad():
            scaled = torch.cat([u, v]) / tau
            for rows, cols in blocks:
                f_uu, f_vv, f_uv = _masked_block_weights(scaled, u, v, rows, cols, shift, labels)
                sum_u[rows] += f_uu.sum(dim=1) + f_uv.sum(dim=1)
                sum_v[rows] += f_vv.sum(dim=1)
                sum_v[cols] += f_uv.sum(dim=0)
                if keep:
                    kept.append((f_uu, f_vv, f_uv))
        ctx.save_for_backward(u, v, sum_u, sum_v, labels)
        ctx.tau, ctx.blocks, ctx.shift, ctx.kept = tau, blocks, shift, kept
        return torch.log(sum_u) + shift, torch.log(sum_v) + shift

    @staticmethod
    def backward(ctx, grad_log_du, grad_log_dv):
        # With a_i = g^u_i / (τ S^u_i) and b_j = g^v_j / (τ S^v_j), dL/dT_uu(i,j) = a_i f_uu(i,j),
        # dL/dT_vv(i,j) = b_i f_vv(i,j) and dL/dT_uv(i,j) = (a_i + b_j) f_uv(i,j), with T = cosine blocks.
        u, v, sum_u, sum_v, labels = ctx.saved_tensors
        tau, d = ctx.tau, u.shape[1]
        a = (grad_log_du / sum_u / tau)[:, None]
        b = (grad_log_dv / sum_v / tau)[:, None]
        u_and_scaled, v_and_scaled = torch.cat([u, a * u], dim=1), torch.cat([v, b * v], dim=1)
        grad_u, grad_v = torch.zeros_like(u), torch.zeros_like(v)
        with torch.no_grad():
            scaled = torch.cat([u, v]) / tau
            for index, (rows, cols) in enumerate(ctx.blocks):
                if ctx.kept:
                    f_uu, f_vv, f_uv = ctx.kept[index]
                else:
                    f_uu, f_vv, f_uv = _masked_block_weights(scaled, u, v, rows, cols, ctx.shift, labels)
                # Symmetric f: the column contributions of a row block equal its row contributions.
                both = f_uu @ u_and_scaled[cols]
                grad_u[rows] += a[rows] * both[:, :d] + both[:, d:]
                both = f_vv @ v_and_scaled[cols]
                grad_v[rows] += b[rows] * both[:, :d] + both[:, d:]
                both = f_uv @ v_and_scaled[cols]
                grad_u[rows] += a[rows] * both[:, :d] + both[:, d:]
                both = f_uv.T @ torch.cat([a[rows] * u[rows], u[rows]], dim=1)
                grad_v[cols] += both[:, :d] + b[cols] * both[:, d:]
        ctx.kept = []
        return grad_u, grad_v, None, None, None, None


# -------------------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------------------

@dataclass
class StaigResult:
    """Projection-head embedding ``h`` (stored as ``X_staig``), encoder output ``z`` and the training record."""

    embedding: np.ndarray
    encoder_embedding: np.ndarray
    record: dict = field(default_factory=dict)


#: Epochs of full-batch training when ``n_epochs`` is not given (the paper's 400).
FULL_BATCH_EPOCHS = 400


def train_staig(
    x,
    adjacency: sp.spmatrix,
    config,
    *,
    slice_bounds: list[tuple[int, int]] | None = None,
    image_features: np.ndarray | None = None,
    device: torch.device,
    random_state: int = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    training: str = "full",
    batch: BatchSettings = BatchSettings(),
    coordinates: np.ndarray | None = None,
) -> StaigResult:
    """Train STAIG on preprocessed expression ``x`` (spots × genes, dense or sparse) and a symmetric spatial
    adjacency.

    Integration: spots sorted by slice, ``slice_bounds`` giving each slice's (start, end) rows and the adjacency
    block-diagonal; each anchor's negatives are then drawn from its own slice only. ``image_features`` (rows
    as ``x``) drive ``edge_drop='image'`` and, on one slice with ``config.debias``, the pseudo-labels whose
    members leave each other's negatives.

    ``training='minibatch'`` is the large-data mode (:mod:`.minibatch`; needs ``coordinates``): each step takes
    ``batch.batch_size`` anchors, whose negatives are the batch's other anchors of their slice; without
    ``config.n_epochs`` it runs about 2,000 steps. ``'full'`` is the published full-batch training.
    """
    seed_everything(random_state)
    drop = edge_drop_probabilities(x, adjacency, config.edge_drop, config.edge_drop_rate, random_state,
                                   image_features=image_features)
    single_slice = slice_bounds is None or len(slice_bounds) == 1
    labels = None
    if image_features is not None and config.debias and single_slice:
        labels = torch.as_tensor(image_pseudo_labels(image_features, config.n_pseudo_labels), device=device)
    pairs = undirected_edges(adjacency)
    n_spots, n_genes = x.shape
    model = StaigNet(n_genes, config.hidden_dim, config.n_layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = training_epochs(config.n_epochs, training, n_spots, batch, FULL_BATCH_EPOCHS, coordinates)
    if training == "minibatch":
        step, embed, mode = _minibatch_training(model, x, adjacency, pairs, drop, labels, config, slice_bounds,
                                                coordinates, batch, device, random_state)
    else:
        step, embed, mode = _full_batch_training(model, x, pairs, drop, labels, config, slice_bounds, device)
    trainer = Trainer(model, optimizer, epochs=epochs, device=device, progress=progress, description="STAIG")
    record = trainer.fit(step)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    with torch.no_grad():
        if config.n_resamples:  # the paper's optional step: the mean over sampled edge sets
            z, h = embed(sampled=True)
            for _ in range(config.n_resamples - 1):  # a running sum: one draw in memory at a time
                z_draw, h_draw = embed(sampled=True)
                z, h = z + z_draw, h + h_draw
            z, h = z / config.n_resamples, h / config.n_resamples
        else:
            z, h = embed()
    return StaigResult(embedding=h.cpu().numpy(), encoder_embedding=z.cpu().numpy(),
                       record={**record.as_dict(), "config": asdict(config), **mode,
                               "n_slices": len(slice_bounds) if slice_bounds else 1,
                               "image": image_features is not None,
                               "debiased": labels is not None,
                               "mean_edge_drop_probability": float(drop.mean()) if len(drop) else 0.0})


def _full_batch_training(model, x, pairs, drop, labels, config, slice_bounds, device):
    """One step per epoch on every spot: (step, embed, what the record says of the mode)."""
    features = dense_features(x, device)
    pairs = torch.as_tensor(pairs, device=device)
    drop_probability = torch.as_tensor(drop, device=device)
    full_edges = torch.cat([pairs.T, pairs.T.flip(0)], dim=1)
    n_genes = features.shape[1]

    def step(epoch: int) -> torch.Tensor:
        view_edges = [sample_view_edges(pairs, drop_probability) for _ in range(2)]
        h1, h2 = (model(features, edges, sample_gene_mask(n_genes, rate, device))
                  for rate, edges in zip(config.feature_mask, view_edges))
        positives = (full_edges, full_edges) if config.positives == "full" else tuple(view_edges)
        return neighbour_contrastive_loss(h1, h2, positives, config.tau, pseudo_labels=labels,
                                          slice_bounds=slice_bounds, memory_budget_mb=config.memory_budget_mb)

    def embed(sampled: bool = False):
        """(z, h) on the full graph, or on an edge set sampled as a training view's is."""
        z = model.encode(features, sample_view_edges(pairs, drop_probability) if sampled else full_edges)
        return z, model.projection(z)

    return step, embed, {"mode": "full"}


def _minibatch_training(model, x, adjacency, pairs, drop, labels, config, slice_bounds, coordinates, batch, device,
                        random_state):
    """Batches of spatial patches on their neighbourhoods (:mod:`.minibatch`): (step, embed, what the record
    says of the mode)."""
    x = sp.csr_matrix(x, dtype=np.float32)
    n_spots, n_genes = x.shape
    bounds = slice_bounds or [(0, n_spots)]
    codes = np.repeat(np.arange(len(bounds)), [end - start for start, end in bounds])
    graph = sp.csr_matrix(adjacency, dtype=np.float32)
    graph.data[:] = 1.0
    hoods = Neighbourhoods(graph)
    patches = spatial_patches(coordinates, codes, batch.patch_size)
    batches = PatchBatches(patches, batch.batch_size, np.random.default_rng(random_state))
    drop_probability = torch.as_tensor(drop)
    n_layers = len(model.convs)

    def draw_view():
        """An augmented graph over all spots (drawn once per epoch): its propagation matrix and positives."""
        kept = pairs[(torch.rand(len(pairs)) >= drop_probability).numpy()]
        positives = graph if config.positives == "full" else edge_matrix(n_spots, kept)
        return normalised_adjacency(n_spots, kept), positives

    def local_edges(positives, anchors, targets):
        block = hoods.block(positives, anchors, targets)
        rows = np.repeat(np.arange(len(anchors)), np.diff(block.indptr))
        return torch.as_tensor(np.vstack([rows, block.indices]), dtype=torch.long, device=device)

    def step(epoch: int):
        views = [draw_view(), draw_view()]
        for anchors in batches:
            sets = hoods.hops(hoods.grow(anchors), n_layers)  # anchors and their neighbours (the positives), then hops
            h1, h2 = (model.projection(hoods.encode(model, x, sets, propagation,
                                                    sample_gene_mask(n_genes, rate, device)))
                      for (propagation, _), rate in zip(views, config.feature_mask))
            edges = tuple(local_edges(positives, anchors, sets[0]) for _, positives in views)
            yield neighbour_contrastive_loss(
                h1, h2, edges, config.tau, pseudo_labels=None if labels is None else labels[anchors],
                slice_bounds=slice_bounds_in(codes, anchors), memory_budget_mb=config.memory_budget_mb,
                n_anchors=len(anchors))

    clean = normalised_adjacency(n_spots, pairs)
    chunk = max(batch.batch_size, 8192)

    def embed(sampled: bool = False):
        """(z, h) on the full graph, or on an edge set sampled as a training view's is."""
        propagation = draw_view()[0] if sampled else clean
        z = torch.cat([hoods.encode(model, x, hoods.hops(np.arange(first, min(first + chunk, n_spots)), n_layers),
                                    propagation)
                       for first in range(0, n_spots, chunk)])
        return z, model.projection(z)

    return step, embed, {"mode": "minibatch", "batch_size": batch.batch_size, "patch_size": batch.patch_size,
                         "n_patches": int(patches.max() + 1)}
