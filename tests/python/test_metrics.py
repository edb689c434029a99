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
