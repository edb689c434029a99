import numpy as np
import pytest

from conftest import r_with_mclust
from spatialdomains import cluster, metrics
from spatialdomains.errors import BackendUnavailable, InputError


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [6, 0, 0], [0, 6, 0]])
    x = np.vstack([rng.normal(c, 1.0, (150, 3)) for c in centres])
    return x, np.repeat([0, 1, 2], 150)


@pytest.mark.parametrize("method", ["gmm", "kmeans", "leiden"])
def test_python_backends_recover_blobs(blobs, method):
    x, truth = blobs
    result = cluster.cluster_embedding(x, 3, method)
    assert result.backend == method and len(np.unique(result.labels)) == 3
    assert metrics.ari(truth, result.labels) > 0.9


@pytest.mark.skipif(not r_with_mclust(), reason="needs R with the mclust package and rpy2")
def test_mclust_through_r(blobs):
    x, truth = blobs
    result = cluster.cluster_embedding(x, 3, "mclust")
    assert result.backend == "mclust" and metrics.ari(truth, result.labels) > 0.9
    again = cluster.cluster_embedding(x, 3, "mclust")
    np.testing.assert_array_equal(result.labels, again.labels)
    assert cluster.cluster_embedding(x, 3, "auto").backend == "mclust"


@pytest.mark.skipif(not r_with_mclust(), reason="needs R with the mclust package and rpy2")
def test_mclust_initialised_on_a_subset_finds_the_partition_of_the_full_initialisation():
    """Above MCLUST_INIT_SPOTS spots, the hierarchical start runs on a random subset (linear cost overall); on
    well-separated data it must find the same partition as a start from every spot."""
    import rpy2.robjects as ro
    from rpy2.robjects import numpy2ri

    rng = np.random.default_rng(5)
    centres = rng.normal(0, 6, size=(4, 8))
    truth = rng.integers(0, 4, size=3 * cluster.MCLUST_INIT_SPOTS // 2)
    x = centres[truth] + rng.normal(size=(len(truth), 8))
    subset = cluster.cluster_embedding(x, 4, "mclust")
    assert subset.details["initialisation"] == "hierarchical, on a random subset of 2000 spots"
    with (ro.default_converter + numpy2ri.converter).context():
        full = np.asarray(ro.r("""function(x) { suppressPackageStartupMessages(library(mclust))
            Mclust(x, G = 4, modelNames = "EEE", verbose = FALSE,
                   initialization = list(subset = seq_len(nrow(x))))$classification }""")(x))
    assert metrics.ari(full, subset.labels) == 1.0 and metrics.ari(truth, subset.labels) > 0.99
    assert cluster.cluster_embedding(x[:500], 4, "mclust").details["initialisation"] == (
        "hierarchical, on every spot")


@pytest.fixture
def separated():
    """Four well-separated groups in 8 dimensions, 1,200 spots."""
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 6, size=(4, 8))
    truth = rng.integers(0, 4, size=1200)
    return centres[truth] + rng.normal(size=(len(truth), 8)), truth


@pytest.mark.parametrize("method", ["gmm", "leiden",
                                    pytest.param("mclust", marks=pytest.mark.skipif(
                                        not r_with_mclust(), reason="needs R with the mclust package and rpy2"))])
def test_fitting_on_a_sample_finds_the_partition_of_fitting_every_spot(separated, method, monkeypatch):
    """Above FIT_SPOTS spots a model is fitted on a sample and the other spots assigned by it (linear cost); on
    well-separated data that is the partition a fit on every spot finds, and the record says which ran."""
    x, truth = separated
    full = cluster.cluster_embedding(x, 4, method)
    assert full.details["fitted_on"] == "every spot"
    monkeypatch.setattr(cluster, "FIT_SPOTS", 400)
    sampled = cluster.cluster_embedding(x, 4, method)
    assert sampled.details["fitted_on"] == "a random sample of 400 of the 1,200 spots"
    assert sampled.details["assigned_by"]
    assert metrics.ari(full.labels, sampled.labels) == 1.0 and metrics.ari(truth, sampled.labels) > 0.99
    np.testing.assert_array_equal(sampled.labels, cluster.cluster_embedding(x, 4, method).labels)


def test_nearest_mean_in_blocks():
    rng = np.random.default_rng(0)
    x, means = rng.normal(size=(1000, 5)), rng.normal(size=(3, 5))
    expected = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    np.testing.assert_array_equal(cluster.nearest_mean(x, means, block=64), expected)


@pytest.mark.skipif(not r_with_mclust(), reason="needs R with the mclust package and rpy2")
def test_mclust_without_a_fit_falls_back_with_a_warning():
    degenerate = np.ones((60, 3))
    assert cluster.mclust(degenerate, 3) is None
    with pytest.warns(RuntimeWarning, match="falling back to 'gmm'"):
        result = cluster.cluster_embedding(degenerate, 3, "mclust")
    assert result.backend == "gmm"


def test_missing_r_names_the_fallback(blobs, monkeypatch, caplog):
    monkeypatch.setattr(cluster, "mclust_unavailable_reason", lambda: "R is not installed")
    x, _ = blobs
    with pytest.raises(BackendUnavailable, match="method='gmm'"):
        cluster.cluster_embedding(x, 3, "mclust")
    result = cluster.cluster_embedding(x, 3, "auto")
    assert result.backend == "gmm"
    assert "R is not installed" in caplog.text and "'gmm'" in caplog.text


def test_number_of_domains_by_silhouette(blobs):
    x, _ = blobs
    result, scores = cluster.choose_n_domains(x, range(2, 7), "kmeans")
    assert result.n_domains == 3 and max(scores, key=scores.get) == 3
    assert set(scores) == {2, 3, 4, 5, 6}


def test_refinement_majority_and_ties():
    coordinates = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4, 0]], dtype=float)
    # Spot 2 (label 9) sees 1, 3 (labels 1, 1) with k=2: majority 1.
    np.testing.assert_array_equal(cluster.refine_labels(np.array([1, 1, 9, 1, 1]), coordinates, 2), [1, 1, 1, 1, 1])
    # Tie at spot 2: neighbours 1 (label 5) and 3 (label 7); own label 7 is among the tied ones: kept.
    refined = cluster.refine_labels(np.array([5, 5, 7, 7, 7]), coordinates, 2)
    assert refined[2] == 7
    # Tie without its own label: neighbours 5 and 7, own 9 -> smallest tied label, 5.
    assert cluster.refine_labels(np.array([5, 5, 9, 7, 7]), coordinates, 2)[2] == 5
    # String labels work too.
    assert list(cluster.refine_labels(np.array(list("aabaa")), coordinates, 2)) == list("aaaaa")


def test_bad_arguments(blobs):
    x, _ = blobs
    with pytest.raises(InputError, match="cluster method"):
        cluster.cluster_embedding(x, 3, "dbscan")
    with pytest.raises(InputError, match="n_domains"):
        cluster.cluster_embedding(x, 1)
    with pytest.raises(InputError, match="NaN"):
        cluster.cluster_embedding(np.full((10, 2), np.nan), 2)
