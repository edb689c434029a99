"""Spotscape (ICML 2025): a GCN autoencoder trained with the Similarity Telescope, single-slice mode.

As specified in the method note (``shared/methods/spotscape.md``): two-layer GCN encoder with batch norm and
ReLU (G → 256 → 64), MLP decoder (64 → 256 → G), two views per epoch (directed edge dropping, one gene mask per
view), and the loss 0.1·L_rec + L_SC. L_SC, the mean squared asymmetry of the cross-view cosine matrix
S = Ẑ¹Ẑ²ᵀ, is computed exactly from d×d Gram matrices, so no N×N object is ever formed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .layers import GCNLayer
from .trainer import Trainer, seed_everything


@dataclass(frozen=True)
class SpotscapeConfig:
    """Spotscape hyper-parameters (single slice); defaults from the method note."""

    n_epochs: int = 1000
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    dims: tuple[int, ...] = (256, 64)
    n_top_genes: int = 5000
    edge_drop: tuple[float, float] = (0.2, 0.2)
    feature_mask: tuple[float, float] = (0.2, 0.2)
    lambda_rec: float = 0.1
    lambda_sc: float = 1.0
    batch_norm_momentum: float = 0.1
    graph: str = "radius"
    radius: float | None = None
    max_neighbors: int = 50
    n_neighbors: int = 6

    def __post_init__(self) -> None:
        checks = {
            "n_epochs": self.n_epochs >= 1,
            "learning_rate": self.learning_rate > 0,
            "dims": len(self.dims) >= 2 and all(d >= 1 for d in self.dims),
            "edge_drop": len(self.edge_drop) == 2 and all(0 <= p < 1 for p in self.edge_drop),
            "feature_mask": len(self.feature_mask) == 2 and all(0 <= p < 1 for p in self.feature_mask),
            "batch_norm_momentum": 0 < self.batch_norm_momentum <= 1,
            "graph": self.graph in ("radius", "knn"),
            "radius": self.radius is None or self.radius > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise InputError(f"invalid Spotscape setting(s) {bad} in {self}; see spatialdomains.tl.spotscape")


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
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.relu(norm(conv(x, edge_index, gene_mask if i == 0 else None)))
        return x

    def forward(self, x, edge_index, gene_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x, edge_index, gene_mask)
        return z, self.decoder(z)


def similarity_asymmetry(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L_SC = (1/B²) Σ_ij (S_ij − S_ji)² with S = Ẑ¹Ẑ²ᵀ (rows L2-normalised), without forming S.

    Σ_ij (S_ij − S_ji)² = 2(⟨AᵀA, CᵀC⟩ − ⟨CᵀA, AᵀC⟩) for A = Ẑ¹, C = Ẑ²: only d×d Gram matrices, accumulated
    in float64 because the two terms are O(B²) and nearly cancel.
    """
    a = F.normalize(z1, dim=1, eps=1e-12).double()
    c = F.normalize(z2, dim=1, eps=1e-12).double()
    cross = c.T @ a
    total = 2 * ((a.T @ a) * (c.T @ c)).sum() - 2 * (cross * cross.T).sum()
    return (total / z1.shape[0] ** 2).to(z1.dtype)


def drop_directed_edges(edge_index: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep each directed edge with probability 1 − ``rate`` (published: directed, not per undirected pair)."""
    if rate == 0:
        return edge_index
    keep = torch.rand(edge_index.shape[1], device=edge_index.device) >= rate
    return edge_index[:, keep]


def gene_mask(n_genes: int, rate: float, device: torch.device) -> torch.Tensor:
    """One mask per view, shared by all spots: each gene is zeroed with probability ``rate``."""
    return (torch.rand(n_genes, device=device) >= rate).to(torch.float32)


@dataclass
class SpotscapeResult:
    embedding: np.ndarray
    denoised: np.ndarray
    record: dict


def train_spotscape(
    x: np.ndarray,
    adjacency: sp.spmatrix,
    config: SpotscapeConfig,
    *,
    device: torch.device,
    random_state: int = 0,
    deterministic: bool = False,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> SpotscapeResult:
    """Train Spotscape on log-normalised expression ``x`` (spots × genes) and a symmetric spatial adjacency."""
    seed_everything(random_state, deterministic=deterministic)
    features = torch.as_tensor(x, dtype=torch.float32, device=device)
    adjacency = sp.coo_matrix(adjacency)
    # Self loops are not listed: the GCN adds every spot's own loop, so dropping one would change nothing.
    edges = torch.as_tensor(np.vstack([adjacency.row, adjacency.col]), dtype=torch.long, device=device)
    n_genes = features.shape[1]
    model = SpotscapeNet(n_genes, config.dims, config.batch_norm_momentum).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    trainer = Trainer(model, optimizer, epochs=config.n_epochs, device=device, progress=progress,
                      description="Spotscape")

    def step(epoch: int) -> torch.Tensor:
        outputs = [model(features, drop_directed_edges(edges, drop), gene_mask(n_genes, mask, device))
                   for drop, mask in zip(config.edge_drop, config.feature_mask)]
        (z1, x1), (z2, x2) = outputs
        reconstruction = 0.5 * (F.mse_loss(x1, features) + F.mse_loss(x2, features))
        return config.lambda_rec * reconstruction + config.lambda_sc * similarity_asymmetry(z1, z2)

    record = trainer.fit(step)
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    with torch.no_grad():
        z, denoised = model(features, edges)
    return SpotscapeResult(embedding=z.cpu().numpy(), denoised=denoised.cpu().numpy(),
                           record={**record.as_dict(), "config": asdict(config), "n_edges": int(adjacency.nnz)})
