"""SpaMI (PLoS Comput Biol 2025): spatial multi-omics domains from per-omics graph encoders trained with a
Deep-Graph-Infomax loss, fused by a per-spot attention over the omics.

As specified in the method note (``shared/methods/spami.md``): for each omics, Dropout → GCN → ReLU → GCN
(d_m → 256 → 64) on the shared kNN graph; a row-permuted copy of its features through the same encoder; the
readout g_i = σ(normalise(mean over spot i and its k nearest)) and a bilinear discriminator, with the symmetric
("balance") DGI term; attention α = softmax_m(uᵀ tanh(W h_m)); GCN decoders from the fused embedding; the cosine
correspondence between the omics. Both graphs are sparse (the readout is a sparse mean over k + 1 spots), so
nothing is N×N. Written for M modalities; one modality trains the same model without the correspondence term.
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
from .trainer import Trainer, seed_everything


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


def gcn_operator(adjacency: sp.spmatrix, device: torch.device) -> SparseOperator:
    """D̃^{-1/2}(A + I)D̃^{-1/2} of a symmetric binary adjacency (computed once)."""
    a = sp.csr_matrix(adjacency, dtype=np.float64)
    a = ((a + a.T) > 0).astype(np.float64) + sp.identity(a.shape[0], format="csr")
    scale = 1.0 / np.sqrt(np.asarray(a.sum(axis=1)).ravel())
    return SparseOperator(sp.diags(scale) @ a @ sp.diags(scale), device)


def readout_operator(neighbours: np.ndarray, device: torch.device) -> SparseOperator:
    """Row i averages spot i and its k nearest spots (``neighbours``: N × k): the published dense readout
    mask, row-normalised, without its N×N storage."""
    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k + 1)
    cols = np.hstack([np.arange(n)[:, None], neighbours]).ravel()
    return SparseOperator(sp.csr_matrix((np.full(len(rows), 1.0 / (k + 1)), (rows, cols)), shape=(n, n)), device)


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

    def forward(self, x: torch.Tensor, operator: SparseOperator) -> torch.Tensor:
        return self.second(F.relu(self.first(self.dropout(x), operator)), operator)


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
) -> SpamiResult:
    """Train SpaMI on preprocessed per-omics ``features`` (spots × d_m each, same spots), the symmetric kNN
    ``adjacency`` and the directed ``neighbours`` (N × k) of the readout."""
    n_modalities = len(features)
    for name, weights in (("dgi_weights", config.dgi_weights), ("reconstruction_weights",
                                                                config.reconstruction_weights)):
        if len(weights) < n_modalities:
            raise InputError(f"{name} has {len(weights)} weights for {n_modalities} modalities")
    seed_everything(random_state)
    xs = [torch.as_tensor(x, dtype=torch.float32, device=device) for x in features]
    operator = gcn_operator(adjacency, device)
    readout = readout_operator(neighbours, device)
    model = SpamiNet([x.shape[1] for x in xs], config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    trainer = Trainer(model, optimizer, epochs=config.n_epochs, device=device, progress=progress,
                      description="SpaMI")
    n_spots = xs[0].shape[0]

    def step(epoch: int) -> torch.Tensor:
        embeddings, loss = [], torch.zeros((), device=device)
        for m, (x, encoder) in enumerate(zip(xs, model.encoders)):
            corrupted_x = x[torch.randperm(n_spots, device=device)]
            clean, corrupted = encoder(x, operator), encoder(corrupted_x, operator)
            loss = loss + config.dgi_weights[m] * dgi_loss(model.discriminators[m], clean, corrupted,
                                                           summary(clean, readout), summary(corrupted, readout))
            embeddings.append(clean)
        fused, _ = model.attention(embeddings)
        for m, (x, decoder) in enumerate(zip(xs, model.decoders)):
            loss = loss + config.reconstruction_weights[m] * F.mse_loss(decoder(fused, operator), x)
        if n_modalities > 1:
            loss = loss + config.correspondence_weight * correspondence_loss(embeddings)
        return loss

    record = trainer.fit(step)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    with torch.no_grad():
        embeddings, fused, attention, reconstructions = model(xs, operator)
    return SpamiResult(
        embedding=fused.cpu().numpy(),
        modality_embeddings=[h.cpu().numpy() for h in embeddings],
        attention=attention.cpu().numpy(),
        reconstructions=[r.cpu().numpy() for r in reconstructions],
        record={**record.as_dict(), "config": asdict(config), "n_edges": int(sp.csr_matrix(adjacency).nnz // 2)},
    )
