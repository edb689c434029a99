import numpy as np
import pytest
import scipy.sparse as sp

from spatialdomains import graph
from spatialdomains.errors import InputError


def _random_points(n=500, seed=0):
    return np.random.default_rng(seed).random((n, 2)) * 100


def test_knn_graph_symmetric_binary_no_self_loops():
    adjacency = graph.knn_graph(_random_points(), 5)
    assert (adjacency != adjacency.T).nnz == 0
    assert adjacency.diagonal().sum() == 0
    assert set(np.unique(adjacency.data)) == {1.0}
    degrees = np.asarray(adjacency.sum(axis=1)).ravel()
    assert degrees.min() >= 5
    # OR-symmetrisation: each spot has its 5 neighbours plus those that chose it.
    assert adjacency.nnz == 2 * len(graph.undirected_edges(adjacency))


def test_knn_graph_matches_brute_force():
    points = _random_points(200, 1)
    adjacency = graph.knn_graph(points, 4).toarray()
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    directed = np.zeros_like(adjacency)
    np.put_along_axis(directed, np.argsort(distances, axis=1)[:, :4], 1, axis=1)
    np.testing.assert_array_equal(adjacency, np.maximum(directed, directed.T))


def test_duplicated_coordinates_exclude_self_by_index():
    points = np.repeat(_random_points(50), 2, axis=0)  # every point twice
    adjacency = graph.knn_graph(points, 3)
    assert adjacency.diagonal().sum() == 0
    for i in range(0, 100, 2):
        assert adjacency[i, i + 1] == 1  # the twin is the nearest other spot
    assert np.asarray(adjacency.sum(axis=1)).min() >= 3


def test_hex_lattice_has_six_neighbours_with_radius_rule(small_sample):
    adjacency = graph.radius_graph(small_sample.obsm["spatial"])
    degrees = np.asarray(adjacency.sum(axis=1)).ravel()
    assert degrees.max() == 6 and np.median(degrees) == 6
    assert (adjacency != adjacency.T).nnz == 0 and adjacency.diagonal().sum() == 0


def test_multi_slice_graph_is_block_diagonal():
    points = np.vstack([_random_points(100, 0), _random_points(80, 1)])  # overlapping coordinates
    slices = np.array(["b"] * 100 + ["a"] * 80)
    adjacency = graph.multi_slice_graph(points, slices, n_neighbors=5)
    coo = adjacency.tocoo()
    assert np.all(slices[coo.row] == slices[coo.col])
    np.testing.assert_array_equal(adjacency[:100, :100].toarray(), graph.knn_graph(points[:100], 5).toarray())
    np.testing.assert_array_equal(adjacency[100:, 100:].toarray(), graph.knn_graph(points[100:], 5).toarray())


def test_lattice_detection(small_sample):
    assert graph.is_lattice(small_sample.obsm["spatial"])
    assert not graph.is_lattice(_random_points())
    assert graph.median_nn_distance(small_sample.obsm["spatial"]) == pytest.approx(100.0)


def test_graph_input_errors():
    with pytest.raises(InputError, match="more than 5 spots"):
        graph.knn_graph(_random_points(5), 5)
    with pytest.raises(InputError, match="NaN"):
        graph.knn_graph(np.array([[0, 0], [np.nan, 1], [2, 2]]), 1)
    with pytest.raises(InputError, match="slice labels"):
        graph.multi_slice_graph(_random_points(10), ["a"] * 9)
    assert isinstance(graph.knn_graph(_random_points(10), 2), sp.csr_matrix)


def test_nearest_other_spots_break_ties_by_index():
    # 5 x 5 square grid, numbered x-fastest as R's expand.grid: the centre (index 12) has four spots at distance 1,
    # then four diagonal ones; ties go to the lower index, exactly as the R package orders them.
    grid = np.array([(x, y) for y in range(1, 6) for x in range(1, 6)], dtype=float)
    nearest = graph.nearest_other_spots(grid, 6)
    assert nearest[12].tolist() == [7, 11, 13, 17, 6, 8]
    assert not np.any(nearest == np.arange(len(grid))[:, None])
    # Duplicated positions: self is still excluded by index and the twin comes first.
    twins = np.vstack([grid, grid[:1]])
    assert graph.nearest_other_spots(twins, 1)[0, 0] == 25
