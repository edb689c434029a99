"""Spatial neighbour graphs, built with a KD-tree and kept sparse (never an N×N dense matrix).

Graphs are binary, symmetric ``scipy.sparse.csr_matrix`` adjacencies without self loops, the layout squidpy
stores in ``obsp['spatial_connectivities']``. Several slices are joined block-diagonally, with no edges
between slices.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import KDTree

from .errors import InputError


def knn_graph(coordinates: np.ndarray, n_neighbors: int = 5) -> sp.csr_matrix:
    """Connect each spot to its ``n_neighbors`` nearest other spots, then symmetrise (A = max(A, Aᵀ)).

    The neighbours are those of :func:`nearest_other_spots` (ties to the lower index), the one neighbour rule of
    the package: graphs, SpaMI's readout and refinement all use it.
    """
    coordinates = _as_coordinates(coordinates)
    n = coordinates.shape[0]
    if n_neighbors < 1:
        raise InputError(f"n_neighbors must be at least 1, got {n_neighbors}")
    if n <= n_neighbors:
        raise InputError(f"a {n_neighbors}-nearest-neighbour graph needs more than {n_neighbors} spots, got {n}")
    return adjacency_from_neighbours(nearest_other_spots(coordinates, n_neighbors))


def adjacency_from_neighbours(neighbours: np.ndarray) -> sp.csr_matrix:
    """The symmetric adjacency of directed neighbour lists (``neighbours``: n_spots × k indices)."""
    n, k = neighbours.shape
    return _symmetric_adjacency(np.repeat(np.arange(n), k), neighbours.ravel(), n)


def nearest_other_spots(coordinates: np.ndarray, k: int) -> np.ndarray:
    """(n_spots, k) indices of each spot's k nearest other spots, nearest first; ties go to the lower index.

    Candidates come from a KD-tree; their squared distances are recomputed exactly and sorted by (distance,
    index), widening the candidate set for rows where a tie could reach past it. The order is therefore fully
    determined, which matters on lattices (Visium), where many spots are equally far apart, and lets the R
    package reproduce the same neighbours. Self is excluded by index, not by position.
    """
    coordinates = np.asarray(coordinates, dtype=np.float64)
    n = coordinates.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k must be between 1 and the number of spots - 1 ({n - 1}), got {k}")
    tree = KDTree(coordinates)
    result = np.empty((n, k), dtype=np.int64)
    rows = np.arange(n)
    n_candidates = min(n, k + 9)
    while rows.size:
        _, candidates = tree.query(coordinates[rows], k=n_candidates)
        squared = ((coordinates[candidates] - coordinates[rows, None, :]) ** 2).sum(axis=2)
        squared[candidates == rows[:, None]] = np.inf
        order = _order_by_distance_then_index(squared, candidates)
        nearest = np.take_along_axis(candidates, order[:, :k], axis=1)
        kth = np.take_along_axis(squared, order[:, k - 1:k], axis=1)[:, 0]
        farthest = np.where(np.isinf(squared), -np.inf, squared).max(axis=1)
        settled = (farthest > kth) | (n_candidates == n)
        result[rows[settled]] = nearest[settled]
        rows = rows[~settled]
        n_candidates = min(n, 2 * n_candidates)
    return result


def _order_by_distance_then_index(squared: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per row, the column order sorting by squared distance, then by spot index."""
    by_index = np.argsort(candidates, axis=1, kind="stable")
    by_distance = np.argsort(np.take_along_axis(squared, by_index, axis=1), axis=1, kind="stable")
    return np.take_along_axis(by_index, by_distance, axis=1)


def radius_graph(coordinates: np.ndarray, radius: float | None = None,
                 max_neighbors: int | None = None) -> sp.csr_matrix:
    """Connect every pair of spots closer than ``radius`` (default: 1.5 × the median nearest-neighbour distance).

    With ``max_neighbors``, a spot with more spots inside the radius keeps only its nearest ones (before the
    graph is symmetrised).
    """
    coordinates = _as_coordinates(coordinates)
    if radius is None:
        radius = 1.5 * median_nn_distance(coordinates)
    if not np.isfinite(radius) or radius <= 0:
        raise InputError(f"radius must be a positive number, got {radius}")
    if max_neighbors is not None and max_neighbors < 1:
        raise InputError(f"max_neighbors must be at least 1, got {max_neighbors}")
    neighbours, _ = KDTree(coordinates).query_radius(coordinates, r=radius, return_distance=True,
                                                     sort_results=True)
    rows, cols = [], []
    for spot, found in enumerate(neighbours):  # each sorted nearest first
        found = found[found != spot]
        if max_neighbors is not None:
            found = found[:max_neighbors]
        rows.append(np.full(len(found), spot))
        cols.append(found)
    rows = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    cols = np.concatenate(cols) if cols else np.empty(0, dtype=np.int64)
    return _symmetric_adjacency(rows, cols, coordinates.shape[0])


def multi_slice_graph(coordinates: np.ndarray, slice_labels, method: str = "knn", **kwargs) -> sp.csr_matrix:
    """Build one graph per slice (each in its own coordinates, never aligned) and join them block-diagonally.

    Spots keep their positions in the input order; no edge joins two slices.
    """
    coordinates = _as_coordinates(coordinates)
    slice_labels = np.asarray(slice_labels)
    if slice_labels.shape[0] != coordinates.shape[0]:
        raise InputError(
            f"slice labels have {slice_labels.shape[0]} entries but there are {coordinates.shape[0]} spots"
        )
    builders = {"knn": knn_graph, "radius": radius_graph}
    if method not in builders:
        raise InputError(f"graph method must be one of {sorted(builders)}, got '{method}'")
    rows, cols = [], []
    for label in _unique_in_order(slice_labels):
        members = np.flatnonzero(slice_labels == label)
        block = builders[method](coordinates[members], **kwargs).tocoo()
        rows.append(members[block.row])
        cols.append(members[block.col])
    n = coordinates.shape[0]
    return sp.csr_matrix((np.ones(sum(len(r) for r in rows), dtype=np.float32),
                          (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


#: Up to this many spots the neighbours of an embedding (for scanpy's graph) are exact; above, approximate.
EXACT_EMBEDDING_NEIGHBOURS = 50_000


def embedding_neighbours(n_spots: int, n_neighbors: int, random_state: int = 0):
    """The ``transformer`` for ``scanpy.pp.neighbors`` on an embedding of ``n_spots`` spots: scikit-learn's exact
    search up to :data:`EXACT_EMBEDDING_NEIGHBOURS` spots, pynndescent's approximate one (cost about linear in
    the spots) above. scanpy's own pynndescent path fails with SciPy's sparse arrays (no ``getnnz``), so the
    graph is handed over as a sparse matrix."""
    if n_spots <= EXACT_EMBEDDING_NEIGHBOURS:
        return "sklearn"
    from pynndescent import PyNNDescentTransformer

    class _MatrixTransformer(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **options):
            return sp.csr_matrix(super().fit_transform(X, y, **options))

        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

    return _MatrixTransformer(n_neighbors=n_neighbors, metric="euclidean", random_state=random_state)


def undirected_edges(adjacency: sp.spmatrix) -> np.ndarray:
    """The (E, 2) array of undirected edges (i < j) of a symmetric adjacency."""
    upper = sp.triu(adjacency, k=1).tocoo()
    return np.stack([upper.row, upper.col], axis=1).astype(np.int64)


def median_nn_distance(coordinates: np.ndarray) -> float:
    """Median distance from each spot to its nearest other spot."""
    return float(np.median(_nn_distances(_as_coordinates(coordinates))))


def is_lattice(coordinates: np.ndarray, tolerance: float = 0.05, fraction: float = 0.9) -> bool:
    """True for regular spot lattices (Visium, ST): ≥ 90% of nearest-neighbour distances within ±5% of the median."""
    distances = _nn_distances(_as_coordinates(coordinates))
    median = np.median(distances)
    if median <= 0:
        return False
    return bool(np.mean(np.abs(distances - median) <= tolerance * median) >= fraction)


def spacing(coordinates: np.ndarray, slice_codes: np.ndarray | None = None) -> dict:
    """How the spots are laid out: ``layout`` ('lattice' when every slice is a regular lattice, as Visium spots and
    Visium HD bins are, else 'irregular', as cell centroids are) and ``median_spacing`` (the median over slices of
    the median nearest-neighbour distance), from one nearest-neighbour query per slice."""
    coordinates = _as_coordinates(coordinates)
    codes = np.zeros(len(coordinates), dtype=int) if slice_codes is None else np.asarray(slice_codes)
    lattices, medians = [], []
    for code in _unique_in_order(codes):
        distances = _nn_distances(coordinates[codes == code])
        median = float(np.median(distances))
        medians.append(median)
        lattices.append(median > 0 and np.mean(np.abs(distances - median) <= 0.05 * median) >= 0.9)
    return {"layout": "lattice" if all(lattices) else "irregular", "median_spacing": float(np.median(medians))}


def _nn_distances(coordinates: np.ndarray) -> np.ndarray:
    if coordinates.shape[0] < 2:
        raise InputError("at least two spots are needed to measure spot distances")
    distances, index = KDTree(coordinates).query(coordinates, k=2)
    # With duplicated points the first hit may not be self; the nearest *other* point is then at distance 0.
    is_self_first = index[:, 0] == np.arange(coordinates.shape[0])
    return np.where(is_self_first, distances[:, 1], distances[:, 0])


def _symmetric_adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    directed = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    adjacency = directed.maximum(directed.T).tocsr()
    adjacency.sort_indices()
    return adjacency


def _as_coordinates(coordinates: np.ndarray) -> np.ndarray:
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.ndim != 2 or coordinates.shape[1] < 2:
        raise InputError(f"coordinates must be an (n_spots, 2) array, got shape {coordinates.shape}")
    if not np.all(np.isfinite(coordinates)):
        raise InputError("coordinates contain NaN or infinite values: drop or fix those spots")
    return coordinates


def _unique_in_order(values: np.ndarray) -> list:
    _, first = np.unique(values, return_index=True)
    return [values[i] for i in np.sort(first)]
