"""The large-data training mode the models share: an epoch visits every spot once as an anchor, in mini-batches
of whole spatial patches, each computed on its graph neighbourhood only, so that an epoch's cost grows linearly
with the number of spots and nothing of size spots × spots or dense spots × genes is ever held.

- **Batches:** each slice is cut into square patches of about ``patch_size`` spots; an epoch shuffles the
  patches and fills each batch with whole patches until it holds ``batch_size`` anchors. Patches keep most of an
  anchor's graph neighbours inside its batch, and a batch of patches from all over the tissue still brings
  negatives from every region.
- **Neighbourhoods:** a GCN layer's output at a node needs its inputs at the node's neighbours, so each batch
  computes, for an L-layer encoder, on its anchors and their neighbours (whose embeddings serve as positives)
  and L hops around them. The graph convolution on those rows equals the full-graph one exactly.
- **Views:** the augmented graphs (edge dropping) are drawn once per epoch over the whole graph, O(edges), and
  their normalised adjacency is shared by the epoch's batches.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import InputError, option

logger = logging.getLogger("spatialdomains")

TRAINING_MODES = ("auto", "full", "minibatch")
#: ``training='auto'`` trains on mini-batches above this many spots: full batch costs O(spots²) per epoch
#: (STAIG on 2 CPU cores: about 0.8 s per epoch at 10,000 spots, 25.7 s at 50,000), mini-batches
#: O(spots · batch_size). Every Visium section (at most 4,992 spots) trains in full batch, as published.
FULL_BATCH_LIMIT = 10_000
#: Optimiser steps the large-data mode aims at when the number of epochs is not given (STAIG's full batch
#: takes 400 steps on a Visium section; mini-batches of fewer negatives take more).
DEFAULT_STEPS = 2_000
#: Denoised values over every spot and gene are kept up to this many (1 GB of float32); above, only the embedding
#: and the model's own outputs are (Spotscape's large-data mode, SpaMI's RNA back-projection to genes; the record
#: says so), as spots × genes would not fit in memory.
DENOISED_LIMIT = 250_000_000


@dataclass(frozen=True)
class BatchSettings:
    """How the large-data mode cuts an epoch: ``batch_size`` anchors per step, patches of ``patch_size`` spots."""

    batch_size: int = 2048
    patch_size: int = 64

    def __post_init__(self) -> None:
        for name, value in (("batch_size", self.batch_size), ("patch_size", self.patch_size)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise InputError(f"{option(name, value)}: give a whole number of at least 1")


def choose_training(mode: str, n_spots: int) -> str:
    """``'full'`` or ``'minibatch'`` for ``mode`` (one of :data:`TRAINING_MODES`) and ``n_spots`` spots."""
    if mode not in TRAINING_MODES:
        raise InputError(f"{option('training', mode)}: choose one of {', '.join(TRAINING_MODES)}")
    if mode == "auto":
        return "minibatch" if n_spots > FULL_BATCH_LIMIT else "full"
    return mode


def default_epochs(n_spots: int, batch_size: int, full_batch_epochs: int) -> int:
    """Epochs that give about :data:`DEFAULT_STEPS` optimiser steps, and never more than the full-batch count."""
    steps_per_epoch = max(1, math.ceil(n_spots / batch_size))
    return int(min(full_batch_epochs, max(1, round(DEFAULT_STEPS / steps_per_epoch))))


def training_epochs(n_epochs: int | None, training: str, n_spots: int, batch: BatchSettings, full_batch_epochs: int,
                    coordinates) -> int:
    """The epochs a model trains: ``n_epochs`` when given, else about :data:`DEFAULT_STEPS` steps in mini-batches
    (which need the spots' coordinates, as their batches are spatial patches) or ``full_batch_epochs``."""
    if training == "minibatch" and coordinates is None:
        raise ValueError("training='minibatch' needs the spots' coordinates (its batches are spatial patches)")
    if n_epochs:
        steps = n_epochs * max(1, math.ceil(n_spots / batch.batch_size))
        if training == "minibatch" and steps > 10 * DEFAULT_STEPS:
            logger.warning("%s in mini-batches of %d is %s optimiser steps (without it, about %s); a preset's "
                           "epochs are meant for full batch", option("n_epochs", n_epochs), batch.batch_size,
                           f"{steps:,}", f"{DEFAULT_STEPS:,}")
        return n_epochs
    if training == "minibatch":
        return default_epochs(n_spots, batch.batch_size, full_batch_epochs)
    return full_batch_epochs


def spatial_patches(coordinates: np.ndarray, slice_codes: np.ndarray | None, patch_size: int) -> np.ndarray:
    """Patch number of each spot: each slice's bounding box cut into square tiles that hold ``patch_size`` spots
    on average (numbers are unique across slices)."""
    codes = np.zeros(len(coordinates), dtype=np.int64) if slice_codes is None else np.asarray(slice_codes)
    patch = np.empty(len(coordinates), dtype=np.int64)
    offset = 0
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        xy = np.asarray(coordinates[rows], dtype=np.float64)[:, :2]
        low = xy.min(axis=0)
        extent = np.maximum(xy.max(axis=0) - low, 1e-9)
        side = math.sqrt(extent[0] * extent[1] * patch_size / len(rows)) or 1.0
        tiles = np.floor((xy - low) / side).astype(np.int64)
        _, local = np.unique(tiles[:, 0] * (tiles[:, 1].max() + 1) + tiles[:, 1], return_inverse=True)
        patch[rows] = local + offset
        offset += local.max() + 1
    return patch


class PatchBatches:
    """An epoch's batches of anchors: whole patches in a new random order each epoch, cut when a batch holds
    ``batch_size`` spots; anchors come sorted (so slices stay contiguous in a batch)."""

    def __init__(self, patches: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        order = np.argsort(patches, kind="stable")
        self.members = np.split(order, np.flatnonzero(np.diff(patches[order])) + 1)
        self.batch_size, self.rng, self.n = batch_size, rng, len(patches)

    def __len__(self) -> int:
        return max(1, math.ceil(self.n / self.batch_size))

    def __iter__(self) -> Iterator[np.ndarray]:
        batch, size = [], 0
        for index in self.rng.permutation(len(self.members)):
            batch.append(self.members[index])
            size += len(self.members[index])
            if size >= self.batch_size:
                yield np.sort(np.concatenate(batch))
                batch, size = [], 0
        if batch:
            yield np.sort(np.concatenate(batch))


def slice_bounds_in(codes: np.ndarray, anchors: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) positions of each slice among a batch's sorted ``anchors`` (``codes``: every spot's slice)."""
    changes = np.flatnonzero(np.diff(codes[anchors])) + 1
    starts, stops = np.concatenate([[0], changes]), np.concatenate([changes, [len(anchors)]])
    return list(zip(starts.tolist(), stops.tolist()))


def normalised_adjacency(n: int, pairs: np.ndarray) -> sp.csr_matrix:
    """GCN's D̃^{-1/2}(A + I)D̃^{-1/2} (float32 CSR) of the undirected edges ``pairs`` (m × 2) on ``n`` nodes."""
    with_loops = edge_matrix(n, pairs) + sp.identity(n, dtype=np.float32, format="csr")
    scale = sp.diags((1.0 / np.sqrt(np.asarray(with_loops.sum(axis=1)).ravel())).astype(np.float32))
    return sp.csr_matrix(scale @ with_loops @ scale, dtype=np.float32)


class Neighbourhoods:
    """Node sets and adjacency blocks of a batch, with one reusable position array (no per-batch O(N) work)."""

    def __init__(self, graph: sp.csr_matrix) -> None:
        self.graph = sp.csr_matrix(graph)
        self.position = np.full(self.graph.shape[0], -1, dtype=np.int64)

    def grow(self, nodes: np.ndarray) -> np.ndarray:
        """``nodes`` followed by their graph neighbours that are not among them (sorted)."""
        starts, stops = self.graph.indptr[nodes], self.graph.indptr[nodes + 1]
        neighbours = np.unique(self.graph.indices[_ranges(starts, stops)])
        self.position[nodes] = 1
        outside = neighbours[self.position[neighbours] < 0]
        self.position[nodes] = -1
        return np.concatenate([nodes, outside])

    def hops(self, nodes: np.ndarray, n_layers: int) -> list[np.ndarray]:
        """``nodes`` and the node sets each of ``n_layers`` GCN layers reads, innermost first."""
        sets = [nodes]
        for _ in range(n_layers):
            sets.append(self.grow(sets[-1]))
        return sets

    def encode(self, model, x: sp.csr_matrix, sets: list[np.ndarray], propagation: sp.csr_matrix, mask=None):
        """``model.encode_blocks`` on the innermost nodes of ``sets`` (from :meth:`hops`): the sparse features of
        the outermost nodes and each layer's block of the ``propagation`` matrix."""
        blocks = [self.block(propagation, sets[layer], sets[layer + 1]) for layer in reversed(range(len(sets) - 1))]
        return model.encode_blocks(x[sets[-1]], blocks, mask)

    def block(self, matrix: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray) -> sp.csr_matrix:
        """``matrix[rows][:, columns]`` where every entry of those rows lies in ``columns``."""
        starts, stops = matrix.indptr[rows], matrix.indptr[rows + 1]
        take = _ranges(starts, stops)
        self.position[columns] = np.arange(len(columns))
        local = self.position[matrix.indices[take]]
        self.position[columns] = -1
        indptr = np.concatenate([[0], np.cumsum(stops - starts)])
        return sp.csr_matrix((matrix.data[take], local, indptr), shape=(len(rows), len(columns)))


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, stop)`` for each pair, vectorised."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets


class _SparseTimesDense(torch.autograd.Function):
    """``x @ w`` for a constant scipy CSR ``x`` on the CPU (scipy's kernel; torch's sparse backward is ~10×
    slower there); the gradient flows to ``w`` only."""

    @staticmethod
    def forward(ctx, w, x):
        ctx.x = x
        return torch.from_numpy(np.asarray(x @ w.detach().numpy(), dtype=np.float32))

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(np.asarray(ctx.x.T @ grad.numpy(), dtype=np.float32)), None


def sparse_times(x: sp.csr_matrix, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` with gradients for ``w``: scipy on the CPU, torch's sparse kernels on a GPU."""
    if w.device.type == "cpu":
        return _SparseTimesDense.apply(w, x)
    x = sp.csr_matrix(x)
    tensor = torch.sparse_csr_tensor(torch.as_tensor(x.indptr, dtype=torch.int64),
                                     torch.as_tensor(x.indices, dtype=torch.int64),
                                     torch.as_tensor(x.data, dtype=torch.float32), size=x.shape, device=w.device)
    return tensor @ w


def edge_matrix(n: int, pairs: np.ndarray) -> sp.csr_matrix:
    """The symmetric 0/1 adjacency (CSR, no self loops) of the undirected edges ``pairs`` on ``n`` nodes."""
    both = np.concatenate([pairs, pairs[:, ::-1]])
    return sp.csr_matrix((np.ones(len(both), dtype=np.float32), (both[:, 0], both[:, 1])), shape=(n, n))
