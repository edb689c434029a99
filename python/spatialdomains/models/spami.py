"""SpaMI (PLoS Comput Biol 2025): spatial multi-omics domains from per-omics graph encoders trained with a
Deep-Graph-Infomax loss, fused by a per-spot attention over the omics.

As specified in the method note (``shared/methods/spami.md``): for each omics, Dropout → GCN → ReLU → GCN
(d_m → 256 → 64) on the shared kNN graph; a row-permuted copy of its features through the same encoder; the
readout g_i = σ(normalise(mean over spot i and its k nearest)) and a bilinear discriminator, with the symmetric
("balance") DGI term; attention α = softmax_m(uᵀ tanh(W h_m)); GCN decoders from the fused embedding; the cosine
correspondence between the omics. Both graphs are sparse (the readout is a sparse mean over k + 1 spots), so
nothing is N×N. Written for M modalities; one modality trains the same model without the correspondence term.

The large-data mode (``training='minibatch'``, :mod:`.minibatch`) takes every loss on a batch of anchors: the
encoders run on the anchors' four-hop neighbourhood (two GCN layers for the embeddings the decoders read, two
more for the decoders), the corrupted features are one row permutation over all spots per epoch, as in full
batch, and the readout, reconstruction and correspondence terms are the full-batch ones restricted to the anchors.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .minibatch import (BatchSettings, Neighbourhoods, PatchBatches, normalised_adjacency, spatial_patches,
                        training_epochs)
from .trainer import Trainer, seed_everything

#: Epochs of the published full-batch training when the config gives none (the method note: 1,000).
FULL_BATCH_EPOCHS = 1000


class SparseOperator:
    """A fixed sparse N×N matrix with its transpose stored too, so that ``op @ h`` backpropagates with one
    sparse product (torch would re-sort the transpose at every backward pass)."""

    def __init__(self, matrix: sp.spmatrix, device: torch.device) -> None:
        self.matrix = _torch_csr(matrix, device)
        self.transposed = _torch_csr(sp.csr_matrix(matrix).T, device)

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        return _SparseProduct.apply(self.matrix, self.transposed, dense)


class _SparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix, transposed, dense):
        ctx.transposed = transposed
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.transposed @ grad


def _torch_csr(matrix: sp.spmatrix, device: torch.device) -> torch.Tensor:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.as_tensor(matrix.indptr, dtype=torch.long),
                                       torch.as_tensor(matrix.indices, dtype=torch.long),
                                       torch.as_tensor(matrix.data), size=matrix.shape, device=device)


class GraphConv(nn.Module):
    """GCN layer on a precomputed normalised operator: Â X W + b (PyG's GCNConv with Glorot weights).

    The sparse product is taken on the narrower side: (ÂX)W when X has fewer columns than XW, else Â(XW).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, operator: SparseOperator) -> torch.Tensor:
        if self.weight.shape[0] < self.weight.shape[1]:
            return (operator @ x) @ self.weight + self.bias
        return operator @ (x @ self.weight) + self.bias


class Dropout(nn.Module):
    """Inverted dropout, distributed as ``nn.Dropout``, with the mask drawn by ``torch.rand`` (on CPU about
    twice as fast as ``nn.Dropout``'s Bernoulli sampling, which took an eighth of SpaMI's epoch)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        return x * ((torch.rand_like(x) >= self.rate) * (1.0 / (1.0 - self.rate)))


class GraphBlock(nn.Module):
    """Dropout → GCN → ReLU → GCN (linear output): SpaMI's encoder and decoder."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = Dropout(dropout)
        self.first, self.second = GraphConv(in_dim, hidden_dim), GraphConv(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, operator: SparseOperator, inner: SparseOperator | None = None) -> torch.Tensor:
        """On the full graph (``operator``), or on a batch: ``operator`` then ``inner``, the blocks of the graph
        from each layer's input rows to its output rows."""
        return self.second(F.relu(self.first(self.dropout(x), operator)), operator if inner is None else inner)


class ModalityAttention(nn.Module):
    """α_m,i = softmax over m of uᵀ tanh(W h_m,i), W and u shared by the modalities; returns (fused, α)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        self.score = nn.Parameter(torch.empty(dim, 1))
        nn.init.xavier_uniform_(self.weight)
        nn.init.xavier_uniform_(self.score)

    def forward(self, embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack(embeddings, dim=1)  # N × M × d
        scores = (torch.tanh(stacked @ self.weight) @ self.score).squeeze(-1)
        weights = torch.softmax(scores, dim=1)
        return (weights.unsqueeze(-1) * stacked).sum(dim=1), weights


class Discriminator(nn.Module):
    """Bilinear score aᵀWb + β per row; W initialised as DGI's ``nn.Bilinear`` weight (Xavier-uniform with its
    d·d fan-in), β = 0. Written as ((aW) ⊙ b)·1, whose backward pass is far cheaper than ``nn.Bilinear``'s."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.xavier_uniform_(self.weight.data.unsqueeze(0))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.score(a @ self.weight, b)

    def score(self, projected: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The score from aW (``projected``), for callers that score one a against several b."""
        return (projected * b).sum(dim=1) + self.bias


class SpamiNet(nn.Module):
    """Per-omics encoders, discriminators and decoders with one shared attention."""

    def __init__(self, input_dims: list[int], config) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(GraphBlock(d, config.hidden_dim, config.out_dim, config.dropout)
                                      for d in input_dims)
        self.decoders = nn.ModuleList(GraphBlock(config.out_dim, config.hidden_dim, d, config.dropout)
                                      for d in input_dims)
        self.discriminators = nn.ModuleList(Discriminator(config.out_dim) for _ in input_dims)
        self.attention = ModalityAttention(config.out_dim)

    def forward(self, features: list[torch.Tensor], operator: SparseOperator):
        """Clean pass: (per-omics embeddings, fused embedding, attention, reconstructions)."""
        embeddings = [encoder(x, operator) for encoder, x in zip(self.encoders, features)]
        fused, attention = self.attention(embeddings)
        reconstructions = [decoder(fused, operator) for decoder in self.decoders]
        return embeddings, fused, attention, reconstructions


def summary(embedding: torch.Tensor, readout: SparseOperator) -> torch.Tensor:
    """DGI readout: σ(L2-normalised mean of each spot's own and its k nearest spots' embeddings)."""
    return torch.sigmoid(F.normalize(readout @ embedding, p=2, dim=1))


def dgi_loss(discriminator: Discriminator, clean: torch.Tensor, corrupted: torch.Tensor,
             clean_summary: torch.Tensor, corrupted_summary: torch.Tensor) -> torch.Tensor:
    """Symmetric DGI loss: (h, g) real vs (h̃, g) fake, plus (h̃, g̃) real vs (h, g̃) fake; BCE on logits, each
    term averaged over its 2N logits."""
    projected = {"clean": clean @ discriminator.weight, "corrupted": corrupted @ discriminator.weight}

    def term(real, fake, summary_):
        logits = torch.cat([discriminator.score(projected[real], summary_),
                            discriminator.score(projected[fake], summary_)])
        labels = torch.cat([logits.new_ones(clean.shape[0]), logits.new_zeros(clean.shape[0])])
        return F.binary_cross_entropy_with_logits(logits, labels)

    return term("clean", "corrupted", clean_summary) + term("corrupted", "clean", corrupted_summary)


def correspondence_loss(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """1 − mean cosine between the omics' embeddings of each spot (averaged over modality pairs)."""
    pairs = [(a, b) for i, a in enumerate(embeddings) for b in embeddings[i + 1:]]
    return torch.stack([1 - F.cosine_similarity(a, b, dim=1).mean() for a, b in pairs]).mean()


@dataclass
class SpamiResult:
    embedding: np.ndarray
    modality_embeddings: list[np.ndarray]
    attention: np.ndarray
    reconstructions: list[np.ndarray]
    record: dict


def train_spami(
    features: list[np.ndarray],
    adjacency: sp.spmatrix,
    neighbours: np.ndarray,
    config,
    *,
    device: torch.device,
    random_state: int = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    training: str = "full",
    batch: BatchSettings = BatchSettings(),
    coordinates: np.ndarray | None = None,
) -> SpamiResult:
    """Train SpaMI on preprocessed per-omics ``features`` (spots × d_m each, same spots), the symmetric kNN
    ``adjacency`` and the directed ``neighbours`` (N × k) of the readout. ``training='minibatch'`` is the
    large-data mode (needs ``coordinates``; without ``config.n_epochs`` about 2,000 steps)."""
    n_modalities = len(features)
    for name, weights in (("dgi_weights", config.dgi_weights), ("reconstruction_weights",
                                                                config.reconstruction_weights)):
        if len(weights) < n_modalities:
            raise InputError(f"{name} has {len(weights)} weights for {n_modalities} modalities")
    seed_everything(random_state)
    n_spots = features[0].shape[0]
    model = SpamiNet([x.shape[1] for x in features], config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = training_epochs(config.n_epochs, training, n_spots, batch, FULL_BATCH_EPOCHS, coordinates)
    graph = _Graph(adjacency, neighbours)
    if training == "minibatch":
        step, mode = _minibatch_step(model, features, graph, config, coordinates, batch, device, random_state)
    else:
        step, mode = _full_batch_step(model, features, graph, config, device)
    trainer = Trainer(model, optimizer, epochs=epochs, device=device, progress=progress, description="SpaMI")
    record = trainer.fit(step)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    with torch.no_grad():
        if training == "minibatch":
            embeddings, fused, attention, reconstructions = _embed_in_chunks(model, features, graph, device,
                                                                             chunk=max(batch.batch_size, 8192))
        else:  # the published pass over every spot at once
            xs = [torch.as_tensor(x, dtype=torch.float32, device=device) for x in features]
            outputs = model(xs, SparseOperator(graph.propagation, device))
            embeddings, fused, attention, reconstructions = (
                [h.cpu().numpy() for h in outputs[0]], outputs[1].cpu().numpy(), outputs[2].cpu().numpy(),
                [r.cpu().numpy() for r in outputs[3]])
    return SpamiResult(
        embedding=fused, modality_embeddings=embeddings, attention=attention, reconstructions=reconstructions,
        record={**record.as_dict(), "config": asdict(config), **mode,
                "n_edges": int(sp.csr_matrix(adjacency).nnz // 2)},
    )


class _Graph:
    """SpaMI's two sparse operators over all spots (GCN propagation and the readout mean), and their blocks."""

    def __init__(self, adjacency: sp.spmatrix, neighbours: np.ndarray) -> None:
        a = sp.csr_matrix(adjacency)
        edges = sp.triu((a + a.T) > 0, k=1).tocoo()
        self.propagation = normalised_adjacency(a.shape[0], np.column_stack([edges.row, edges.col]))
        n, k = neighbours.shape
        rows = np.repeat(np.arange(n), k + 1)
        cols = np.hstack([np.arange(n)[:, None], neighbours]).ravel()
        self.readout = sp.csr_matrix((np.full(len(rows), 1.0 / (k + 1), dtype=np.float32), (rows, cols)),
                                     shape=(n, n))
        self.hoods = Neighbourhoods(self.propagation)

    def blocks(self, sets: list[np.ndarray], device) -> list[SparseOperator]:
        """The propagation blocks from ``sets[i + 1]`` to ``sets[i]``, outermost first."""
        return [SparseOperator(self.hoods.block(self.propagation, sets[i], sets[i + 1]), device)
                for i in reversed(range(len(sets) - 1))]


def _losses(model: SpamiNet, inputs: list[torch.Tensor], corrupt, encode_blocks: list[SparseOperator],
            decode_blocks: list[SparseOperator], readout: SparseOperator, targets: list[torch.Tensor],
            config) -> torch.Tensor:
    """SpaMI's loss on the anchors. Inputs are rows of the encoders' input nodes, ``corrupt(m)`` the corrupted
    rows of modality m (called just before its encoder runs, which in full batch keeps the published order of
    random draws); the encoders output the nodes the decoders read (the first rows of which are the readout's
    nodes, the first of those the anchors)."""
    n_anchors, n_read = readout.matrix.shape
    embeddings, loss = [], torch.zeros((), device=targets[0].device)
    for m, (x, encoder) in enumerate(zip(inputs, model.encoders)):
        x_corrupted = corrupt(m)
        clean, corrupted = encoder(x, *encode_blocks), encoder(x_corrupted, *encode_blocks)
        loss = loss + config.dgi_weights[m] * dgi_loss(
            model.discriminators[m], clean[:n_anchors], corrupted[:n_anchors],
            summary(clean[:n_read], readout), summary(corrupted[:n_read], readout))
        embeddings.append(clean)
    fused, _ = model.attention(embeddings)
    for m, (target, decoder) in enumerate(zip(targets, model.decoders)):
        loss = loss + config.reconstruction_weights[m] * F.mse_loss(decoder(fused, *decode_blocks), target)
    if len(inputs) > 1:
        loss = loss + config.correspondence_weight * correspondence_loss([h[:n_anchors] for h in embeddings])
    return loss


def _full_batch_step(model, features, graph: _Graph, config, device):
    """One step per epoch on every spot, as published."""
    xs = [torch.as_tensor(x, dtype=torch.float32, device=device) for x in features]
    operator, readout = SparseOperator(graph.propagation, device), SparseOperator(graph.readout, device)
    n_spots = xs[0].shape[0]

    def step(epoch: int) -> torch.Tensor:
        return _losses(model, xs, lambda m: xs[m][torch.randperm(n_spots, device=device)], [operator], [operator],
                       readout, xs, config)

    return step, {"mode": "full"}


def _minibatch_step(model, features, graph: _Graph, config, coordinates, batch: BatchSettings, device,
                    random_state: int):
    """Batches of spatial patches on their four-hop neighbourhoods (:mod:`.minibatch`)."""
    n_spots = features[0].shape[0]
    features = [np.asarray(x, dtype=np.float32) for x in features]
    patches = spatial_patches(coordinates, None, batch.patch_size)
    batches = PatchBatches(patches, batch.batch_size, np.random.default_rng(random_state))
    hoods = graph.hoods

    def rows(x: np.ndarray, nodes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x[nodes], device=device)

    def step(epoch: int):
        # one permutation over all spots per modality and epoch, drawn as full batch draws it
        permutations = [torch.randperm(n_spots).numpy() for _ in features]
        for anchors in batches:
            sets = hoods.hops(anchors, 4)  # decoders: anchors ← 1 hop ← 2 hops; encoders: 2 hops ← 3 ← 4
            readout = SparseOperator(hoods.block(graph.readout, anchors, sets[1]), device)
            yield _losses(model, [rows(x, sets[4]) for x in features],
                          lambda m: rows(features[m], permutations[m][sets[4]]), graph.blocks(sets[2:], device),
                          graph.blocks(sets[:3], device), readout, [rows(x, anchors) for x in features], config)

    return step, {"mode": "minibatch", "batch_size": batch.batch_size, "patch_size": batch.patch_size,
                  "n_patches": int(patches.max() + 1)}


def _embed_in_chunks(model: SpamiNet, features, graph: _Graph, device, chunk: int):
    """Per-omics embeddings, fused embedding, attention and reconstructions of every spot, ``chunk`` spots at a
    time on their neighbourhoods (the full-graph values, summed in another order), as NumPy arrays."""
    n_spots = features[0].shape[0]
    chunks = []
    for first in range(0, n_spots, chunk):
        sets = graph.hoods.hops(np.arange(first, min(first + chunk, n_spots)), 2)
        chunks.append((sets, graph.blocks(sets, device)))
    parts = [[encoder(torch.as_tensor(np.asarray(x[sets[2]], dtype=np.float32), device=device), *blocks)
              for encoder, x in zip(model.encoders, features)] for sets, blocks in chunks]
    embeddings = [torch.cat([part[m] for part in parts]) for m in range(len(features))]
    fused, attention = model.attention(embeddings)
    reconstructions = [torch.cat([decoder(fused[torch.as_tensor(sets[2], device=device)], *blocks)
                                  for sets, blocks in chunks]).cpu().numpy() for decoder in model.decoders]
    return ([h.cpu().numpy() for h in embeddings], fused.cpu().numpy(), attention.cpu().numpy(), reconstructions)
