"""Layers shared by the models."""
from __future__ import annotations

import torch
from torch import nn


class GCNLayer(nn.Module):
    """Graph convolution D̃^{-1/2}(A + I)D̃^{-1/2} X W + b (PyG's GCNConv, with self loops, not cached).

    A gene mask r is applied through the weight, (X ⊙ r)W = X (r ⊙ W), so no masked copy of X is made.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        from torch_geometric.nn.inits import glorot

        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        glorot(self.weight)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, gene_mask: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.weight if gene_mask is None else self.weight * gene_mask[:, None]
        return self.propagate(x @ weight, edge_index)

    def propagate(self, hidden: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The aggregation step alone, D̃^{-1/2}(A + I)D̃^{-1/2} H + b, for callers that computed H = XW."""
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        edge_index, edge_weight = gcn_norm(edge_index, None, hidden.shape[0], add_self_loops=True,
                                           dtype=hidden.dtype)
        source, target = edge_index
        out = torch.zeros_like(hidden).index_add_(0, target, hidden.index_select(0, source) * edge_weight[:, None])
        return out + self.bias
