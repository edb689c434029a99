"""Clustering an embedding into spatial domains.

Backends: R's ``mclust`` (model EEE, through rpy2; R starts only when mclust is asked for), a Gaussian mixture
with one shared full covariance (``gmm``: the EEE model in Python), ``kmeans`` and ``leiden`` (resolution
searched until it yields the requested number of domains). ``auto`` uses mclust when R and mclust are present
and the Gaussian mixture otherwise, and says so. Labels are integers 0..K-1. Above :data:`FIT_SPOTS` spots the
mixtures and Leiden are fitted on a seeded sample and the other spots assigned by the fitted model (linear cost).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._utils import running_inside_r
from .errors import BackendUnavailable, InputError, option
from .graph import embedding_neighbours, nearest_other_spots

logger = logging.getLogger("spatialdomains")

#: Above this many spots mclust's hierarchical initialisation (quadratic in the spots) runs on a random subset
#: of this size and EM then runs on every fitted spot; mclust ≥ 5.4 does the same by default, older versions do not.
MCLUST_INIT_SPOTS = 2000
#: Above this many spots the mixtures (mclust, gmm) and Leiden are fitted on a seeded random sample of this size
#: and every spot is then assigned by the fitted model, so clustering a million cells costs one fit of bounded
#: size plus one linear pass (EM over every cell took over 12 minutes at 1M). At or below it every spot is fitted,
#: exactly as published.
FIT_SPOTS = 50_000

_R_MCLUST = """function(x, G, model, seed, init_spots, fit_spots) {
  suppressPackageStartupMessages(library(mclust))  # Mclust looks up mclustBIC on the search path
  set.seed(seed)
  fitted <- if (nrow(x) > fit_spots) x[sort(sample.int(nrow(x), fit_spots)), , drop = FALSE] else x
  fit <- tryCatch(if (nrow(fitted) > init_spots) {
                      Mclust(fitted, G = G, modelNames = model, verbose = FALSE,
                             initialization = list(subset = sample(seq.int(nrow(fitted)), size = init_spots)))
                  } else Mclust(fitted, G = G, modelNames = model, verbose = FALSE),
                  error = function(e) conditionMessage(e))
  if (is.null(fit)) return("Mclust returned NULL")
  if (is.character(fit)) return(fit)
  as.integer(if (nrow(fitted) < nrow(x)) predict(fit, newdata = x)$classification else fit$classification)
}"""

METHODS = ("auto", "mclust", "gmm", "kmeans", "leiden")
MCLUST_SEED = 2023


@dataclass
class Clustering:
    """Labels (0..K-1) and what produced them."""

    labels: np.ndarray
    backend: str
    n_domains: int
    details: dict = field(default_factory=dict)


def cluster_embedding(
    embedding: np.ndarray,
    n_domains: int,
    method: str = "auto",
    *,
    random_state: int = MCLUST_SEED,
) -> Clustering:
    """Cluster ``embedding`` (spots × dims) into ``n_domains`` groups with the chosen backend."""
    embedding = _as_embedding(embedding)
    if method not in METHODS:
        raise InputError(f"cluster method must be one of {METHODS}, got '{method}'")
    if not 2 <= n_domains < embedding.shape[0]:
        raise InputError(f"n_domains must be between 2 and the number of spots - 1, got {n_domains}")
    if method == "auto":
        reason = mclust_unavailable_reason()
        if reason is None:
            method = "mclust"
        else:
            logger.warning("%s; clustering with the Python fallback 'gmm' (tied-covariance Gaussian mixture, "
                           "the EEE model) instead", reason)
            method = "gmm"
    if method == "mclust":
        labels = mclust(embedding, n_domains, random_state=random_state)
        if labels is not None:
            return Clustering(labels, "mclust", n_domains, {
                "model": "EEE", "seed": random_state, **mclust_initialisation(embedding.shape[0]),
                **fitted_on(embedding.shape[0], "mclust's predict (one E-step)")})
        warnings.warn("mclust EEE found no fit; falling back to 'gmm' (tied-covariance Gaussian mixture)",
                      RuntimeWarning, stacklevel=2)
        method = "gmm"
    if method == "gmm":
        return Clustering(gaussian_mixture(embedding, n_domains, random_state=random_state), "gmm", n_domains,
                          {"covariance_type": "tied", "seed": random_state,
                           **fitted_on(embedding.shape[0], "the fitted mixture's most probable component")})
    if method == "kmeans":
        return Clustering(kmeans(embedding, n_domains, random_state=random_state), "kmeans", n_domains,
                          {"n_init": 10, "seed": random_state})
    labels, resolution = leiden(embedding, n_domains, random_state=random_state)
    return Clustering(labels, "leiden", n_domains, {
        "resolution": resolution, "seed": random_state,
        **fitted_on(embedding.shape[0], "the nearest domain mean in the embedding")})


# -------------------------------------------------------------------------------------------------------------
# Backends
# -------------------------------------------------------------------------------------------------------------

def mclust_unavailable_reason() -> str | None:
    """None when rpy2, R and the mclust package can be used; otherwise what is missing and how to get it."""
    if running_inside_r():
        return ("Python runs inside R (reticulate), where starting R again through rpy2 would abort R; "
                "cluster in R instead (clusterDomains() in the spatialdomains R package)")
    try:
        import rpy2  # noqa: F401
    except ImportError:
        return ("mclust needs R through rpy2, which is not installed (pip install 'spatialdomains[r]' "
                "with R and r-cran-mclust present)")
    try:
        import rpy2.robjects as ro

        from ._utils import prefer_own_libpython

        prefer_own_libpython()  # R's start put the system's library folders first

        has_mclust = bool(ro.r('isTRUE(suppressWarnings(requireNamespace("mclust", quietly = TRUE)))')[0])
    except Exception as error:  # rpy2 raises various errors when it cannot find or start R
        return f"R cannot be started through rpy2 ({error}); install R (e.g. apt-get install r-base-core)"
    if not has_mclust:
        return "the R package mclust is not installed (install.packages('mclust') or apt-get install r-cran-mclust)"
    return None


def mclust(embedding: np.ndarray, n_domains: int, *, model: str = "EEE",
           random_state: int = MCLUST_SEED) -> np.ndarray | None:
    """Fit ``mclust::Mclust(x, G=n_domains, modelNames=model)``; None when mclust finds no fit (NULL or error)."""
    reason = mclust_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"{reason}; or use {option('cluster_method', 'gmm')} (the EEE model in Python)")
    import rpy2.robjects as ro
    from rpy2.robjects import numpy2ri

    embedding = _as_embedding(embedding)
    with (ro.default_converter + numpy2ri.converter).context():
        classification = ro.r(_R_MCLUST)(embedding, int(n_domains), model, int(random_state), MCLUST_INIT_SPOTS,
                                         FIT_SPOTS)
    classification = np.asarray(classification)
    if classification.dtype.kind in "US":
        logger.warning("mclust %s found no fit: %s", model, classification[0])
        return None
    labels = np.unique(classification.astype(np.int64), return_inverse=True)[1]
    return labels.astype(np.int64)


def mclust_initialisation(n_spots: int) -> dict:
    """What the record says of mclust's initialisation on ``n_spots`` spots."""
    if min(n_spots, FIT_SPOTS) > MCLUST_INIT_SPOTS:
        return {"initialisation": f"hierarchical, on a random subset of {MCLUST_INIT_SPOTS} spots"}
    return {"initialisation": "hierarchical, on every spot"}


def fitted_on(n_spots: int, assignment: str) -> dict:
    """What the record says of the spots a mixture or Leiden was fitted on (see :data:`FIT_SPOTS`)."""
    if n_spots <= FIT_SPOTS:
        return {"fitted_on": "every spot"}
    return {"fitted_on": f"a random sample of {FIT_SPOTS:,} of the {n_spots:,} spots",
            "assigned_by": assignment}


def fitting_sample(n_spots: int, random_state: int) -> np.ndarray | None:
    """The sorted rows a model is fitted on above :data:`FIT_SPOTS` spots (seeded); None when every spot is."""
    if n_spots <= FIT_SPOTS:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n_spots, FIT_SPOTS, replace=False))


def gaussian_mixture(embedding: np.ndarray, n_domains: int, *, random_state: int = MCLUST_SEED) -> np.ndarray:
    """Gaussian mixture with one shared full covariance (mclust's EEE), k-means initialisation; fitted on a
    sample above :data:`FIT_SPOTS` spots, then every spot takes its most probable component."""
    from sklearn.mixture import GaussianMixture

    embedding = _as_embedding(embedding)
    rows = fitting_sample(len(embedding), random_state)
    model = GaussianMixture(n_components=n_domains, covariance_type="tied", init_params="kmeans",
                            reg_covar=1e-6, max_iter=500, random_state=random_state)
    model.fit(embedding if rows is None else embedding[rows])
    return model.predict(embedding).astype(np.int64)


def kmeans(embedding: np.ndarray, n_domains: int, *, random_state: int = MCLUST_SEED) -> np.ndarray:
    """k-means with 10 restarts."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_domains, n_init=10, random_state=random_state).fit_predict(
        _as_embedding(embedding)).astype(np.int64)


def leiden(embedding: np.ndarray, n_domains: int, *, n_neighbors: int = 15, random_state: int = MCLUST_SEED,
           max_steps: int = 30) -> tuple[np.ndarray, float]:
    """Leiden on the symmetric kNN graph of the embedding, bisecting the resolution to get ``n_domains``.

    Returns the labels and the resolution used; when no resolution gives exactly ``n_domains``, the closest
    partition is returned with a warning. Above :data:`FIT_SPOTS` spots the graph is built on a seeded sample and
    every other spot joins the domain whose mean (in the embedding) is nearest.
    """
    embedding = _as_embedding(embedding)
    rows = fitting_sample(len(embedding), random_state)
    if rows is not None:
        sampled, resolution = leiden(embedding[rows], n_domains, n_neighbors=n_neighbors,
                                     random_state=random_state, max_steps=max_steps)
        means = np.stack([embedding[rows][sampled == code].mean(axis=0) for code in range(sampled.max() + 1)])
        labels = nearest_mean(embedding, means)
        labels[rows] = sampled
        return labels, resolution
    import igraph
    import leidenalg

    k = min(n_neighbors, embedding.shape[0] - 1)
    neighbours = nearest_other_spots(embedding, k)
    pairs = np.sort(np.stack([np.repeat(np.arange(len(embedding)), k), neighbours.ravel()], axis=1), axis=1)
    graph = igraph.Graph(n=embedding.shape[0], edges=np.unique(pairs, axis=0).tolist())

    def partition(resolution: float) -> np.ndarray:
        result = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                          resolution_parameter=resolution, seed=random_state)
        return np.asarray(result.membership, dtype=np.int64)

    low, high = 0.0, 5.0
    best, best_resolution = None, None
    for _ in range(max_steps):
        resolution = (low + high) / 2
        labels = partition(resolution)
        found = len(np.unique(labels))
        if best is None or abs(found - n_domains) < abs(len(np.unique(best)) - n_domains):
            best, best_resolution = labels, resolution
        if found == n_domains:
            return labels, resolution
        if found < n_domains:
            low = resolution
        else:
            high = resolution
    warnings.warn(f"Leiden found no resolution giving {n_domains} domains; using {len(np.unique(best))}",
                  RuntimeWarning, stacklevel=2)
    return best, best_resolution


#: SpaMI's published clustering resolutions, tuned by hand per dataset (the method note, section 8).
PUBLISHED_LEIDEN_RESOLUTIONS = {"simulation": 0.4, "misar": 1.0, "p22": 1.18, "thymus": 0.55}


def published_leiden(embedding: np.ndarray, resolution: float, *, n_pcs: int | None = 20, n_neighbors: int = 50,
                     random_state: int = 0) -> np.ndarray:
    """SpaMI's published protocol: PCA of the embedding to ``n_pcs`` components (None: none), scanpy's
    ``n_neighbors`` graph (UMAP connectivities), Leiden (leidenalg) at ``resolution``. The number of domains is
    whatever that resolution gives."""
    import anndata as ad
    import scanpy as sc

    if resolution <= 0:
        raise InputError(f"resolution must be positive, got {resolution}")
    embedding = _as_embedding(embedding)
    adata = ad.AnnData(embedding.astype(np.float32))
    use_rep = "X"
    if n_pcs:
        sc.pp.pca(adata, n_comps=int(min(n_pcs, min(embedding.shape) - 1)), random_state=random_state)
        use_rep = "X_pca"
    k = int(min(n_neighbors, embedding.shape[0] - 1))
    sc.pp.neighbors(adata, n_neighbors=k, use_rep=use_rep, random_state=random_state,
                    transformer=embedding_neighbours(embedding.shape[0], k, random_state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scanpy's note that its default flavour will change
        sc.tl.leiden(adata, resolution=resolution, random_state=random_state, flavor="leidenalg")
    return adata.obs["leiden"].astype(int).to_numpy()


# -------------------------------------------------------------------------------------------------------------
# Number of domains, refinement
# -------------------------------------------------------------------------------------------------------------

#: How the number of domains is chosen when none is given.
CHOOSE_BY = ("silhouette", "stability")
#: Stability: k-means on ``STABILITY_RESAMPLES`` seeded subsamples of 80% of the spots (of at most
#: ``STABILITY_MAX_SPOTS``), scored by the mean adjusted Rand index between every two of them on the spots they
#: share; the largest number whose stability is within ``STABILITY_TOLERANCE`` of the best is kept (the most
#: detailed partition that is as reproducible as the most reproducible one).
STABILITY_RESAMPLES = 10
STABILITY_MAX_SPOTS = 10_000
STABILITY_TOLERANCE = 0.005


def choose_n_domains(
    embedding: np.ndarray,
    candidates=range(2, 16),
    method: str = "auto",
    *,
    random_state: int = MCLUST_SEED,
    silhouette_sample: int = 10_000,
    choose_by: str = "silhouette",
) -> tuple[Clustering, dict[int, float]]:
    """Cluster with the number of domains chosen from ``candidates`` by ``choose_by``: ``'silhouette'`` (the
    clustering of highest silhouette, as STAIG; on at most ``silhouette_sample`` spots) or ``'stability'`` (see
    :func:`stability`). Returns the clustering and the score of every candidate (also in its ``details``).
    """
    from sklearn.metrics import silhouette_score

    if choose_by not in CHOOSE_BY:
        raise InputError(f"{option('choose_by', choose_by)}: choose one of {', '.join(CHOOSE_BY)}")
    embedding = _as_embedding(embedding)
    candidates = [k for k in candidates if 2 <= k < embedding.shape[0]]
    if not candidates:
        raise InputError("no valid candidate number of domains (each must be between 2 and the number of spots - 1)")
    if choose_by == "stability":
        scores = stability(embedding, candidates, random_state=random_state)
        best = most_detailed_stable(scores)
        chosen = cluster_embedding(embedding, best, method, random_state=random_state)
        chosen.details.update(stability_by_n_domains=scores, stability_rule=(
            f"k-means on {STABILITY_RESAMPLES} subsamples of 80% of the spots (at most {STABILITY_MAX_SPOTS:,}); "
            f"mean pairwise ARI; largest number within {STABILITY_TOLERANCE} of the best"))
        return chosen, scores
    sample = min(silhouette_sample, embedding.shape[0])
    scores, results = {}, {}
    for k in candidates:
        result = cluster_embedding(embedding, k, method, random_state=random_state)
        if len(np.unique(result.labels)) < 2:
            continue
        scores[k] = float(silhouette_score(embedding, result.labels, sample_size=sample, random_state=random_state))
        results[k] = result
    if not scores:
        raise RuntimeError("every candidate clustering produced a single domain; give n_domains explicitly")
    best = max(scores, key=scores.get)
    chosen = results[best]
    chosen.details["silhouette_by_n_domains"] = scores
    return chosen, scores


def most_detailed_stable(scores: dict[int, float]) -> int:
    """The largest number of domains whose stability is within :data:`STABILITY_TOLERANCE` of the best."""
    return max(k for k, score in scores.items() if score >= max(scores.values()) - STABILITY_TOLERANCE)


def stability(embedding: np.ndarray, candidates, *, n_resamples: int = STABILITY_RESAMPLES, fraction: float = 0.8,
              max_spots: int = STABILITY_MAX_SPOTS, random_state: int = 0) -> dict[int, float]:
    """For each candidate number of domains, how reproducible its partition is: k-means on ``n_resamples`` seeded
    random subsamples (``fraction`` of the spots, of a seeded sample of at most ``max_spots``), and the mean
    adjusted Rand index between every two partitions on the spots both hold (1: the same partition each time).
    The cost is bounded by ``max_spots``, whatever the size of the sample."""
    from sklearn.metrics import adjusted_rand_score

    embedding = _as_embedding(embedding)
    rng = np.random.default_rng(random_state)
    pool = np.arange(len(embedding))
    if len(pool) > max_spots:
        pool = np.sort(rng.choice(pool, max_spots, replace=False))
    size = max(int(fraction * len(pool)), 3)
    # Subsamples as positions within the pool, so every array below has the pool's size, not the data's
    subsets = [np.sort(rng.choice(len(pool), size, replace=False)) for _ in range(n_resamples)]
    scores = {}
    for k in candidates:
        if not 2 <= k < size:
            continue
        partitions = []
        for seed, rows in enumerate(subsets):
            labels = np.full(len(pool), -1)
            labels[rows] = kmeans(embedding[pool[rows]], k, random_state=random_state + seed)
            partitions.append(labels)
        agreement = []
        for i in range(n_resamples):
            for j in range(i + 1, n_resamples):
                shared = (partitions[i] >= 0) & (partitions[j] >= 0)
                agreement.append(adjusted_rand_score(partitions[i][shared], partitions[j][shared]))
        scores[int(k)] = float(np.mean(agreement))
    return scores


def refine_labels(labels: np.ndarray, coordinates: np.ndarray, n_neighbors: int = 15) -> np.ndarray:
    """Each spot takes the most frequent label among its ``n_neighbors`` nearest other spots.

    Ties keep the spot's own label when it is among the tied ones, otherwise take the smallest label.
    """
    labels = np.asarray(labels)
    codes, encoded = np.unique(labels, return_inverse=True)
    n = len(encoded)
    k = min(n_neighbors, n - 1)
    if k < 1:
        return labels.copy()
    neighbours = nearest_other_spots(coordinates, k)
    votes = np.zeros((n, len(codes)), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), k), encoded[neighbours].ravel()), 1)
    top = votes.max(axis=1)
    own_is_top = votes[np.arange(n), encoded] == top
    refined = np.where(own_is_top, encoded, np.argmax(votes == top[:, None], axis=1))
    return codes[refined]


def nearest_mean(embedding: np.ndarray, means: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Index of the nearest row of ``means`` for every row of ``embedding`` (Euclidean), in blocks of rows."""
    labels = np.empty(len(embedding), dtype=np.int64)
    squared_means = (means ** 2).sum(axis=1)
    for start in range(0, len(embedding), block):
        rows = embedding[start:start + block]
        labels[start:start + block] = np.argmin(squared_means - 2 * rows @ means.T, axis=1)
    return labels


def _as_embedding(embedding: np.ndarray) -> np.ndarray:
    embedding = np.asarray(embedding, dtype=np.float64)
    if embedding.ndim != 2:
        raise InputError(f"the embedding must be a 2-D array (spots × dimensions), got shape {embedding.shape}")
    if not np.all(np.isfinite(embedding)):
        raise InputError("the embedding contains NaN or infinite values")
    return embedding
