import numpy as np
import pytest
import scipy.sparse as sp

from spatialdomains import metrics


def test_ari_hand_computed():
    # Contingency [[2,0],[1,1]] (rows truth a,b): Σ C(n_ij,2)=1, rows Σ=2, cols Σ=3, C(4,2)=6.
    # ARI = (1 - 2*3/6) / (0.5*(2+3) - 2*3/6) = 0 / 1.5 = 0.
    assert metrics.ari(["a", "a", "b", "b"], [1, 1, 1, 2]) == pytest.approx(0.0)
    assert metrics.ari(["a", "a", "b", "b"], [2, 2, 1, 1]) == pytest.approx(1.0)
    # Contingency [[2,1],[0,3]]: Σ C(n_ij,2)=1+3=4, rows 3+3=6, cols 1+6=7, C(6,2)=15: expected 42/15=2.8.
    assert metrics.ari(list("aaabbb"), [1, 1, 2, 2, 2, 2]) == pytest.approx((4 - 2.8) / (6.5 - 2.8))


def test_nmi_homogeneity_accuracy_hand_computed():
    truth, predicted = list("aabb"), [1, 1, 1, 2]
    # H(truth)=ln2; H(pred)= -(3/4 ln 3/4 + 1/4 ln 1/4); I = H(truth) - H(truth|pred) with
    # H(truth|pred) = 3/4 * H(2/3, 1/3).
    h_truth = np.log(2)
    h_pred = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    h_cond = 0.75 * -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    mutual = h_truth - h_cond
    assert metrics.nmi(truth, predicted) == pytest.approx(mutual / ((h_truth + h_pred) / 2))
    assert metrics.homogeneity(truth, predicted) == pytest.approx(1 - h_cond / h_truth)
    assert metrics.accuracy(truth, predicted) == pytest.approx(0.75)
    # Hungarian matching: labels permuted, one spot wrong.
    assert metrics.accuracy(list("aaabbbccc"), [3, 3, 3, 1, 1, 2, 2, 2, 2]) == pytest.approx(8 / 9)
    assert metrics.ami(truth, truth) == pytest.approx(1.0)


def test_unlabelled_spots_are_excluded():
    truth = ["a", "a", None, "b", np.nan, "b", ""]
    predicted = [1, 1, 2, 2, 1, 2, 1]
    scores = metrics.evaluate(truth, predicted)
    assert scores["n_scored"] == 4 and scores["ari"] == pytest.approx(1.0)


def test_spatial_metrics_hand_computed():
    # Path graph 0-1-2-3.
    adjacency = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]]))
    assert metrics.neighbour_agreement([1, 1, 2, 2], adjacency) == pytest.approx(4 / 6)
    # Moran's I of x = (1, 1, 0, 0): z = (.5, .5, -.5, -.5); Σ w z z = 2*(.25 - .25 + .25) = 0.5; W = 6; N = 4.
    assert metrics.morans_i([1, 1, 0, 0], adjacency) == pytest.approx(4 / 6 * 0.5 / 1.0)
    assert metrics.morans_i([1, 0, 1, 0], adjacency) == pytest.approx(-1.0)
    assert metrics.domain_morans_i([1, 1, 2, 2], adjacency) == pytest.approx(1 / 3)


def test_embedding_metrics():
    rng = np.random.default_rng(0)
    embedding = np.vstack([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    labels = np.repeat([0, 1], 50)
    assert metrics.silhouette(embedding, labels) > 0.9
    assert metrics.davies_bouldin(embedding, labels) < 0.1
    assert metrics.silhouette(embedding, rng.permutation(labels)) < 0.1


def test_lisi_of_equidistant_neighbours_is_the_inverse_simpson_of_their_mix():
    # Six corners of a simplex: every spot's five neighbours lie at the same distance, so weights are uniform.
    # A spot of slice A sees 2 A and 3 B: 1 / ((2/5)² + (3/5)²) = 25/13.
    embedding = np.eye(6)
    scores = metrics.lisi(embedding, list("AAABBB"), perplexity=2)
    np.testing.assert_allclose(scores, 25 / 13, rtol=1e-12)


def test_lisi_is_one_and_batch_kl_maximal_for_separated_slices():
    rng = np.random.default_rng(0)
    embedding = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(1000, 1, (60, 2)), rng.normal(-1000, 1, (60, 2))])
    batch = np.repeat(["a", "b", "c"], 60)
    assert metrics.ilisi(embedding, batch, perplexity=10) == pytest.approx(1.0, abs=1e-9)
    # Every neighbourhood is one slice out of three equal ones: KL = log2(3).
    assert metrics.batch_kl(embedding, batch, replicates=5) == pytest.approx(np.log2(3), rel=1e-12)


def test_batch_kl_is_zero_for_a_neighbourhood_with_the_overall_mix():
    # 15 spots at one point, 5 of each of 3 slices; k = 15 neighbours = everything.
    assert metrics.batch_kl(np.zeros((15, 2)), np.repeat(["a", "b", "c"], 5), replicates=3) == pytest.approx(0)


def test_graph_connectivity_counts_the_largest_component_per_label():
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]])
    rng = np.random.default_rng(1)
    embedding = np.repeat(centres, 10, axis=0) + rng.normal(0, 0.1, (40, 2))
    labels = np.array(["x"] * 20 + ["y"] * 10 + [None] * 10, dtype=object)
    # x spans two far-apart groups (largest component 10 of 20), y is one group: (0.5 + 1) / 2.
    assert metrics.graph_connectivity(embedding, labels, n_neighbors=5) == pytest.approx(0.75)


def test_batch_silhouette_by_hand():
    embedding = np.array([[0.0], [0.0], [10.0], [10.0], [0.0], [0.0], [1.0], [1.0]])
    batch = ["A", "A", "B", "B", "A", "B", "A", "B"]
    labels = ["p"] * 4 + ["q"] * 4
    # p: slices far apart, s = 1, score 0. q: for each spot a = 1, b = 0.5, s = −0.5, score 0.5.
    assert metrics.batch_silhouette(embedding, batch, labels) == pytest.approx(0.25)
