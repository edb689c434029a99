"""Spotscape (ICML 2025): a GCN autoencoder trained with the Similarity Telescope, for one or several slices.

As specified in the method note (``shared/methods/spotscape.md``): two-layer GCN encoder with batch norm and
ReLU (G → 256 → 64), MLP decoder (64 → 256 → G), two views per epoch (directed edge dropping, one gene mask per
view), and the loss 0.1·L_rec + L_SC; with several slices + L_SS (similarity-scale matching) and, after the
warm-up, 0.01·L_PCL (prototypes). No N×N object is ever formed: L_SC comes from d×d Gram matrices, L_rec from
an expansion that never forms the reconstructions, and L_SS from a blocked top-k search.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .layers import GCNLayer
from .minibatch import (DENOISED_LIMIT, BatchSettings, Neighbourhoods, PatchBatches, slice_bounds_in, spatial_patches,
                        sparse_times, training_epochs)
from .trainer import Trainer, accumulation_dtype, dense_features, seed_everything

logger = logging.getLogger("spatialdomains")

#: Full-batch training length and prototype warm-up (the method note's defaults).
FULL_BATCH_EPOCHS = 1000
FULL_BATCH_WARMUP = 500


class SpotscapeNet(nn.Module):
    """Encoder (GCN → BatchNorm → ReLU, per layer) and decoder (Linear → BatchNorm → ReLU → Linear)."""

    def __init__(self, n_genes: int, dims: tuple[int, ...] = (256, 64), momentum: float = 0.1) -> None:
        super().__init__()
        sizes = [n_genes, *dims]
        self.convs = nn.ModuleList(GCNLayer(a, b) for a, b in zip(sizes, sizes[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b, momentum=momentum) for b in sizes[1:])
        self.decoder = nn.Sequential(nn.Linear(dims[-1], dims[0]), nn.BatchNorm1d(dims[0], momentum=momentum),
                                     nn.ReLU(), nn.Linear(dims[0], n_genes))

    def encode(self, x: torch.Tensor, edge_index: torch.Tensor, gene_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._encode_rest(self.convs[0](x, edge_index, gene_mask), edge_index)

    def forward(self, x, edge_index, gene_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x, edge_index, gene_mask)
        return z, self.decoder(z)

    def encode_views(self, x: torch.Tensor, views: list[tuple[torch.Tensor, torch.Tensor]],
                     x_transposed: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Encode several views (edge_index, indices of the masked genes) of the same X.

        Equal to ``encode`` with each view's gene mask, but X·W is computed once: a view's first layer is
        XW − X[:, m]·W[m] for its masked genes m (about 20%). Its backward pass likewise needs one Xᵀ·G.
        A contiguous copy of Xᵀ (``x_transposed``), made once by the caller, makes gathering X[:, m] cheap.
        """
        first = self.convs[0]
        shared = x @ first.weight
        genes_by_row = x.T if x_transposed is None else x_transposed
        encoded = []
        for edge_index, masked in views:
            hidden = (shared - genes_by_row[masked].T @ first.weight.index_select(0, masked)
                      if masked.numel() else shared)
            encoded.append(self._encode_rest(first.propagate(hidden, edge_index), edge_index))
        return encoded

    def decoder_hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder up to its last Linear layer (the reconstruction is ``decoder[-1]`` of this)."""
        return self.decoder[:-1](z)

    def encode_blocks(self, x_rows: sp.csr_matrix, blocks: list[sp.csr_matrix],
                      masked: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder on a batch's neighbourhood (large-data mode): ``x_rows`` the sparse features of the
        outermost nodes, ``blocks[l]`` the view's propagation matrix from layer l's input nodes to its output
        nodes, ``masked`` the genes this view zeroes. Batch norm uses the statistics of each layer's nodes."""
        hidden = None
        for i, (conv, norm, block) in enumerate(zip(self.convs, self.norms, blocks)):
            if i == 0:
                weight = conv.weight if masked is None or not masked.numel() else conv.weight.index_fill(0, masked, 0.0)
                hidden = sparse_times(x_rows, weight)
            else:
                hidden = hidden @ conv.weight
            hidden = F.relu(norm(sparse_times(block, hidden) + conv.bias))
        return hidden

    def _encode_rest(self, first_layer: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norms[0](first_layer))
        for conv, norm in zip(self.convs[1:], self.norms[1:]):
            x = F.relu(norm(conv(x, edge_index)))
        return x


def similarity_asymmetry(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L_SC = (1/B²) Σ_ij (S_ij − S_ji)² with S = Ẑ¹Ẑ²ᵀ (rows L2-normalised), without forming S.

    Σ_ij (S_ij − S_ji)² = 2(⟨AᵀA, CᵀC⟩ − ⟨CᵀA, AᵀC⟩) for A = Ẑ¹, C = Ẑ²: only d×d Gram matrices, accumulated
    in float64 (where the device has it) because the two terms are O(B²) and nearly cancel.
    """
    wide = accumulation_dtype(z1.device)
    a = F.normalize(z1, dim=1, eps=1e-12).to(wide)
    c = F.normalize(z2, dim=1, eps=1e-12).to(wide)
    cross = c.T @ a
    total = 2 * ((a.T @ a) * (c.T @ c)).sum() - 2 * (cross * cross.T).sum()
    return (total / z1.shape[0] ** 2).to(z1.dtype)


class ReconstructionTarget:
    """The clean expression X with the statistics that the expanded reconstruction error needs."""

    def __init__(self, x: torch.Tensor, rows_per_block: int = 4096) -> None:
        self.x = x
        self.wide = accumulation_dtype(x.device)
        self.square_sum = x.new_zeros((), dtype=self.wide)
        self.column_sums = x.new_zeros(x.shape[1], dtype=self.wide)
        for start in range(0, x.shape[0], rows_per_block):  # in blocks: no float64 copy of X
            block = x[start:start + rows_per_block].to(self.wide)
            self.square_sum += (block * block).sum()
            self.column_sums += block.sum(dim=0)


def reconstruction_error(target: ReconstructionTarget, hiddens: list[torch.Tensor], output: nn.Linear) -> torch.Tensor:
    """Mean over views of mean((X − X̂ᵥ)²) with X̂ᵥ = Hᵥ Wᵀ + b, without forming any X̂ᵥ.

    ‖X − HWᵀ − 1bᵀ‖² = ‖X‖² − 2⟨HᵀX, Wᵀ⟩ − 2 bᵀ(Xᵀ1) + ⟨HᵀH, WᵀW⟩ + 2 (1ᵀH)Wᵀb + B‖b‖².
    Only HᵀX is large (d × G), and the views share it: Σᵥ⟨HᵥᵀX, Wᵀ⟩ = ⟨(Σᵥ Hᵥ)ᵀX, Wᵀ⟩, so one B×G×d product
    serves the forward pass and one (X W) the backward pass, instead of three per view. The products are
    float32; the terms, O(B·G) each and partly cancelling, are summed in float64 (where the device has it).
    """
    x, weight, bias = target.x, output.weight, output.bias
    n, n_genes = x.shape
    n_views = len(hiddens)
    wide = target.wide
    bias64 = bias.to(wide)
    cross = ((torch.stack(hiddens).sum(dim=0).T @ x) * weight.T).to(wide).sum()
    total = n_views * target.square_sum - 2 * cross - 2 * n_views * (target.column_sums @ bias64)
    weight_gram = (weight.T @ weight).to(wide)
    for hidden in hiddens:
        gram = (hidden.T @ hidden).to(wide)
        total = total + (gram * weight_gram).sum() + 2 * (hidden.sum(dim=0) @ weight.T).to(wide) @ bias64
    total = total + n_views * n * (bias64 @ bias64)
    return (total / (n_views * n * n_genes)).to(x.dtype)


# -------------------------------------------------------------------------------------------------------------
# Several slices: similarity-scale matching and prototypical contrastive learning
# -------------------------------------------------------------------------------------------------------------

def similarity_scale_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    bounds: list[tuple[int, int]],
    k: int = 5,
    *,
    mode: str = "per_slice",
    exclude_self: bool = False,
    memory_budget_mb: float = 256.0,
) -> torch.Tensor:
    """L_SS: each anchor's mean top-k cross-view cosine within its own slice should equal that in other slices.

    ``bounds`` are the (start, end) rows of each slice (spots sorted by slice). ``mode='per_slice'`` averages
    (a_i − b_i^q)² over every other slice q; ``'pooled'`` compares a_i with the top-k over all other slices
    together. k is capped at each slice's size. The top-k search runs on row blocks of S = Ẑ¹Ẑ²ᵀ without
    gradient, keeping only indices; the selected cosines are then recomputed with gradient, which gives the
    exact gradient of a dense top-k (top-k routes gradient to the selected entries only).
    """
    if mode not in ("per_slice", "pooled"):
        raise InputError(f"ss_mode must be 'per_slice' or 'pooled', got '{mode}'")
    n_slices = len(bounds)
    if n_slices < 2:
        return z1.new_zeros(())
    a = F.normalize(z1, dim=1, eps=1e-12)
    c = F.normalize(z2, dim=1, eps=1e-12)
    own_index, other_index = _top_similar_columns(a.detach(), c.detach(), bounds, k, mode, exclude_self,
                                                  memory_budget_mb)
    own = torch.cat([_mean_selected_similarity(a[start:end], c, index)
                     for (start, end), index in zip(bounds, own_index)])
    others = torch.stack([_mean_selected_similarity(a, c, index) for index in other_index], dim=1)
    if mode == "pooled":
        return ((own - others[:, 0]) ** 2).mean()
    slice_of = torch.cat([torch.full((end - start,), q, device=z1.device) for q, (start, end) in enumerate(bounds)])
    is_other = torch.ones_like(others, dtype=torch.bool).scatter_(1, slice_of[:, None], False)
    squared = torch.where(is_other, (own[:, None] - others) ** 2, torch.zeros_like(others))
    return (squared.sum(dim=1) / (n_slices - 1)).mean()


def _mean_selected_similarity(a: torch.Tensor, c: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """mean_k cos(a_i, c_index[i, k]) for each row i (with gradient).

    ``index_select`` rather than ``c[index]``: the backward pass of advanced indexing adds into repeated rows
    in a thread-dependent order on CPU, which would make training irreproducible."""
    gathered = c.index_select(0, index.reshape(-1)).view(*index.shape, c.shape[1])
    return torch.einsum("id,ikd->i", a, gathered) / index.shape[1]


def _top_similar_columns(a, c, bounds, k, mode, exclude_self, memory_budget_mb):
    """Column indices of each anchor's top-k entries of S = a cᵀ, k capped at the slice's size.

    Returns (own, other): ``own`` lists, per slice, its anchors' top-k within their own slice; ``other`` lists,
    per slice q, every anchor's top-k within q (``per_slice``; rows of q's own anchors are 0, unused),
    or one B × k tensor over all other slices together (``pooled``).
    """
    n = a.shape[0]
    sizes = [end - start for start, end in bounds]
    own_k = [min(k, size - 1 if exclude_self else size) for size in sizes]
    if min(own_k) < 1:
        raise InputError("a slice has a single spot, too few for the similarity-scale loss: remove that slice")
    other_k = [min(k, n - max(sizes))] if mode == "pooled" else [min(k, size) for size in sizes]
    own_index = [torch.empty(size, kp, dtype=torch.long, device=a.device) for size, kp in zip(sizes, own_k)]
    other_index = [torch.zeros(n, kq, dtype=torch.long, device=a.device) for kq in other_k]
    rows_per_block = max(1, int(memory_budget_mb * 2**20 // (2 * a.element_size() * n)))
    for p, (start, end) in enumerate(bounds):
        for first in range(start, end, rows_per_block):
            rows = slice(first, min(first + rows_per_block, end))
            block = a[rows] @ c.T
            own_block = block[:, start:end]
            if exclude_self:
                own_block = own_block.clone()
                own_block.diagonal(first - start).fill_(-torch.inf)
            own_index[p][rows.start - start:rows.stop - start] = own_block.topk(own_k[p], dim=1).indices + start
            if mode == "pooled":
                block[:, start:end] = -torch.inf
                other_index[0][rows] = block.topk(other_k[0], dim=1).indices
            else:
                for q, (q_start, q_end) in enumerate(bounds):
                    if q != p:  # an anchor's own slice is not an "other" slice: its rows stay 0, masked later
                        other_index[q][rows] = block[:, q_start:q_end].topk(other_k[q], dim=1).indices + q_start
    return own_index, other_index


def prototype_counts(n_domains: int, granularities: tuple[float, ...] = (1.0, 1.5, 2.0)) -> list[int]:
    """Prototype numbers per granularity from the user's ``n_domains``: K₁ = n, then max(K + 1, ⌈g·n⌉)."""
    counts = []
    for granularity in granularities:
        k = max(2, math.ceil(granularity * n_domains))
        counts.append(max(counts[-1] + 1, k) if counts else k)
    return counts


def torch_kmeans(x: torch.Tensor, k: int, *, n_iter: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the device: k distinct random points as the start (seeded), ``n_iter`` iterations;
    an empty cluster keeps its previous centroid. Returns (centroids k × d, assignments)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    centroids = x[start].clone()
    squared_norms = (x * x).sum(dim=1, keepdim=True)
    for _ in range(n_iter + 1):
        distances = squared_norms - 2 * x @ centroids.T + (centroids * centroids).sum(dim=1)
        assignment = distances.argmin(dim=1)
        if _ == n_iter:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        sizes = torch.bincount(assignment, minlength=k).to(x.dtype)[:, None]
        centroids = torch.where(sizes > 0, sums / sizes.clamp(min=1), centroids)
    return centroids, assignment


def prototypical_loss(z1: torch.Tensor, z2: torch.Tensor, counts: list[int], tau: float = 0.75,
                      seed: int = 0) -> torch.Tensor:
    """L_PCL: prototypes from k-means of z² (detached, not normalised) at each count K; each spot's view-1
    embedding is classified to its view-2 prototype by softmax over cos(z¹ᵢ, c_k)/τ. Averaged over the K."""
    target = z2.detach()
    a = F.normalize(z1, dim=1, eps=1e-12)
    losses = []
    for k in counts:
        centroids, assignment = torch_kmeans(target, k, seed=seed)
        logits = a @ F.normalize(centroids, dim=1, eps=1e-12).T / tau
        losses.append(F.cross_entropy(logits, assignment))
    return torch.stack(losses).mean()


def drop_directed_edges(edge_index: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep each directed edge with probability 1 − ``rate`` (published: directed, not per undirected pair)."""
    if rate == 0:
        return edge_index
    keep = torch.rand(edge_index.shape[1], device=edge_index.device) >= rate
    return edge_index[:, keep]


def masked_genes(n_genes: int, rate: float, device: torch.device) -> torch.Tensor:
    """Indices of the genes one view zeroes (each with probability ``rate``; one mask shared by all spots)."""
    return torch.nonzero(torch.rand(n_genes, device=device) < rate).flatten()


def directed_propagation(n: int, source: np.ndarray, target: np.ndarray) -> sp.csr_matrix:
    """The GCN's D̃^{-1/2}(A + I)D̃^{-1/2} as a (target × source) CSR matrix for the directed edges source → target,
    as PyG's ``gcn_norm`` builds it for an edge_index (self loops added; degrees counted at the targets)."""
    loops = np.arange(n)
    rows, cols = np.concatenate([target, loops]), np.concatenate([source, loops])
    inverse_root = (1.0 / np.sqrt(np.bincount(rows, minlength=n))).astype(np.float32)
    return sp.csr_matrix((inverse_root[rows] * inverse_root[cols], (rows, cols)), shape=(n, n), dtype=np.float32)


@dataclass
class SpotscapeResult:
    embedding: np.ndarray
    denoised: np.ndarray | None  # None when the large-data mode left it out (above DENOISED_LIMIT values)
    record: dict


def train_spotscape(
    x,
    adjacency: sp.spmatrix,
    config,
    *,
    slice_bounds: list[tuple[int, int]] | None = None,
    n_domains: int | None = None,
    device: torch.device,
    random_state: int = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    training: str = "full",
    batch: BatchSettings = BatchSettings(),
    coordinates: np.ndarray | None = None,
) -> SpotscapeResult:
    """Train Spotscape on log-normalised expression ``x`` (spots × genes, dense or sparse) and a symmetric spatial
    adjacency.

    Several slices: spots sorted by slice, ``slice_bounds`` giving each slice's (start, end) rows and the
    adjacency block-diagonal. ``n_domains`` sets the prototype counts; without it they are chosen by silhouette
    at the end of the warm-up. Labels are never an input.

    ``training='minibatch'`` is the large-data mode (:mod:`.minibatch`; needs ``coordinates``): each step takes
    ``batch.batch_size`` anchors (whole spatial patches) and computes the encoder on their two-hop neighbourhood,
    the losses on the anchors (similarity-scale matching between the slices present in the batch); without
    ``config.n_epochs`` it runs about 2,000 steps, with the prototype warm-up at half of them.
    """
    seed_everything(random_state)
    bounds = slice_bounds or [(0, x.shape[0])]
    n_spots, n_genes = x.shape
    model = SpotscapeNet(n_genes, config.dims, config.batch_norm_momentum).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = training_epochs(config.n_epochs, training, n_spots, batch, FULL_BATCH_EPOCHS, coordinates)
    warmup = config.warmup_epochs if config.warmup_epochs is not None else (
        epochs // 2 if training == "minibatch" else FULL_BATCH_WARMUP)
    losses = _Losses(config, n_domains, several=len(bounds) > 1, warmup=warmup, random_state=random_state)
    if training == "minibatch":
        step, embed, mode = _minibatch_training(model, x, adjacency, config, bounds, coordinates, batch, losses,
                                                device, random_state)
    else:
        step, embed, mode = _full_batch_training(model, x, adjacency, config, bounds, losses, device)
    trainer = Trainer(model, optimizer, epochs=epochs, device=device, progress=progress, description="Spotscape")
    record = trainer.fit(step)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    with torch.no_grad():
        z, denoised = embed()
    return SpotscapeResult(embedding=z.cpu().numpy(), denoised=None if denoised is None else denoised.cpu().numpy(),
                           record={**record.as_dict(), "config": asdict(config), **mode, "epochs": epochs,
                                   "warmup_epochs": warmup, "n_edges": int(sp.coo_matrix(adjacency).nnz),
                                   "n_slices": len(bounds), "prototypes": losses.use_prototypes,
                                   "prototype_counts": losses.counts, "prototype_choice": losses.chosen or None,
                                   "denoised_kept": denoised is not None})


class _Losses:
    """Spotscape's loss on one step's anchors: 0.1·L_rec + L_SC, with several slices + L_SS, after the warm-up
    + 0.01·L_PCL (prototype counts from ``n_domains``, or chosen by silhouette when the warm-up ends)."""

    def __init__(self, config, n_domains: int | None, *, several: bool, warmup: int, random_state: int) -> None:
        self.config, self.several, self.warmup, self.random_state = config, several, warmup, random_state
        self.use_prototypes = several if config.prototypes is None else config.prototypes
        self.counts = prototype_counts(n_domains, config.granularities) if n_domains else None
        self.chosen: dict = {}

    def __call__(self, z1, z2, reconstruction, bounds, epoch: int) -> torch.Tensor:
        config = self.config
        loss = config.lambda_rec * reconstruction + config.lambda_sc * similarity_asymmetry(z1, z2)
        if self.several and len(bounds) > 1:
            loss = loss + config.lambda_ss * similarity_scale_loss(
                z1, z2, bounds, config.sim_k, mode=config.ss_mode, exclude_self=config.ss_exclude_self,
                memory_budget_mb=config.memory_budget_mb)
        if self.use_prototypes and epoch >= self.warmup:
            if self.counts is None:
                self.chosen.update(_prototypes_by_silhouette(z2.detach(), self.random_state))
                self.counts = prototype_counts(self.chosen["n_domains"], config.granularities)
            loss = loss + config.lambda_pcl * prototypical_loss(z1, z2, self.counts, config.tau_pcl,
                                                                seed=self.random_state + epoch)
        return loss


def _full_batch_training(model, x, adjacency, config, bounds, losses, device):
    """One step per epoch on every spot, as published: (step, embed, what the record says of the mode)."""
    features = dense_features(x, device)
    adjacency = sp.coo_matrix(adjacency)
    # Self loops are not listed: the GCN adds every spot's own loop, so dropping one would change nothing.
    edges = torch.as_tensor(np.vstack([adjacency.row, adjacency.col]), dtype=torch.long, device=device)
    n_genes = features.shape[1]
    target = ReconstructionTarget(features)
    features_transposed = features.T.contiguous()

    def step(epoch: int) -> torch.Tensor:
        views = [(drop_directed_edges(edges, drop), masked_genes(n_genes, mask, device))
                 for drop, mask in zip(config.edge_drop, config.feature_mask)]
        z1, z2 = model.encode_views(features, views, features_transposed)
        reconstruction = reconstruction_error(target, [model.decoder_hidden(z) for z in (z1, z2)], model.decoder[-1])
        return losses(z1, z2, reconstruction, bounds, epoch)

    def embed():
        z, denoised = model(features, edges)
        return z, denoised

    return step, embed, {"mode": "full"}


def _minibatch_training(model, x, adjacency, config, bounds, coordinates, batch, losses, device, random_state):
    """Batches of spatial patches on their two-hop neighbourhoods (:mod:`.minibatch`): (step, embed, what the
    record says of the mode). The features stay sparse; only a batch's anchors are made dense, for the
    reconstruction target."""
    x = sp.csr_matrix(x, dtype=np.float32)
    n_spots, n_genes = x.shape
    codes = np.repeat(np.arange(len(bounds)), [end - start for start, end in bounds])
    graph = sp.csr_matrix(adjacency, dtype=np.float32)
    graph = sp.csr_matrix(graph - sp.diags(graph.diagonal()))  # the GCN adds each spot's own loop
    graph.eliminate_zeros()
    graph.data[:] = 1.0
    hoods = Neighbourhoods(graph)
    patches = spatial_patches(coordinates, codes, batch.patch_size)
    batches = PatchBatches(patches, batch.batch_size, np.random.default_rng(random_state))
    directed = graph.tocoo()
    n_layers = len(model.convs)

    clean = directed_propagation(n_spots, directed.row, directed.col)

    def draw_view(drop: float) -> sp.csr_matrix:
        """A view's propagation over all spots (drawn once per epoch, as full batch draws it): each directed edge
        dropped with probability ``drop``."""
        if drop == 0:
            return clean
        keep = torch.rand(directed.nnz).numpy() >= drop
        return directed_propagation(n_spots, directed.row[keep], directed.col[keep])

    def step(epoch: int):
        # The views (dropped edges, masked genes) are drawn once per epoch, in full batch's order.
        views = [(draw_view(drop), masked_genes(n_genes, mask, device))
                 for drop, mask in zip(config.edge_drop, config.feature_mask)]
        for anchors in batches:
            sets = hoods.hops(anchors, n_layers)
            z1, z2 = (hoods.encode(model, x, sets, propagation, masked) for propagation, masked in views)
            target = ReconstructionTarget(torch.as_tensor(x[anchors].toarray(), device=device))
            reconstruction = reconstruction_error(target, [model.decoder_hidden(z) for z in (z1, z2)],
                                                  model.decoder[-1])
            yield losses(z1, z2, reconstruction, slice_bounds_in(codes, anchors), epoch)

    chunk = max(batch.batch_size, 8192)
    keep_denoised = n_spots * n_genes <= DENOISED_LIMIT

    def embed():
        z = torch.cat([hoods.encode(model, x, hoods.hops(np.arange(first, min(first + chunk, n_spots)), n_layers),
                                    clean) for first in range(0, n_spots, chunk)])
        if not keep_denoised:
            logger.info("Spotscape: the denoised expression of %d spots × %d genes (%.1f GB) is not kept in the "
                        "large-data mode, only the embedding is; sd.tl.impute says how to get it", n_spots, n_genes,
                        n_spots * n_genes * 4 / 2**30)
            return z, None
        return z, torch.cat([model.decoder(z[first:first + chunk]) for first in range(0, n_spots, chunk)])

    return step, embed, {"mode": "minibatch", "batch_size": batch.batch_size, "patch_size": batch.patch_size,
                         "n_patches": int(patches.max() + 1)}


def _prototypes_by_silhouette(z: torch.Tensor, random_state: int, candidates=range(4, 16),
                              sample: int = 10_000) -> dict:
    """K₁ for the prototypes when the user gave no n_domains: the k-means k with the best silhouette on z
    (at most ``sample`` spots), logged."""
    from ..cluster import choose_n_domains

    values = z.cpu().numpy().astype(np.float64)
    if values.shape[0] > sample:
        values = values[np.random.default_rng(random_state).choice(values.shape[0], sample, replace=False)]
    result, scores = choose_n_domains(values, candidates, "kmeans", random_state=random_state)
    logger.info("Spotscape prototypes: %d domains chosen by silhouette at the end of the warm-up", result.n_domains)
    return {"n_domains": result.n_domains, "silhouette_by_n_domains": scores}
