"""Clustering and spatial metrics. Spots without a reference label (NaN, None, '') are left out, as customary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from .errors import InputError


def labelled(truth, predicted) -> tuple[np.ndarray, np.ndarray]:
    """Drop spots whose reference label is missing; both returned as strings."""
    truth, predicted = pd.Series(np.asarray(truth, dtype=object)), pd.Series(np.asarray(predicted, dtype=object))
    if len(truth) != len(predicted):
        raise InputError(f"reference has {len(truth)} labels but the prediction has {len(predicted)}")
    keep = truth.notna() & (truth.astype(str) != "") & predicted.notna()
    return truth[keep].astype(str).to_numpy(), predicted[keep].astype(str).to_numpy()


def ari(truth, predicted) -> float:
    """Adjusted Rand index."""
    return float(skm.adjusted_rand_score(*labelled(truth, predicted)))


def nmi(truth, predicted) -> float:
    """Normalised mutual information (arithmetic mean normalisation, as sklearn)."""
    return float(skm.normalized_mutual_info_score(*labelled(truth, predicted)))


def ami(truth, predicted) -> float:
    """Adjusted mutual information."""
    return float(skm.adjusted_mutual_info_score(*labelled(truth, predicted)))


def homogeneity(truth, predicted) -> float:
    """Homogeneity: each predicted domain holds spots of a single reference class."""
    return float(skm.homogeneity_score(*labelled(truth, predicted)))


def accuracy(truth, predicted) -> float:
    """Fraction of spots correctly labelled after the best one-to-one matching of domains to classes
    (Hungarian algorithm); unmatched domains count as wrong."""
    truth, predicted = labelled(truth, predicted)
    if len(truth) == 0:
        return float("nan")
    table = pd.crosstab(predicted, truth).to_numpy()
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(truth))


def silhouette(embedding: np.ndarray, labels, *, sample_size: int | None = 10_000, random_state: int = 0) -> float:
    """Mean silhouette width of ``labels`` in ``embedding`` (Euclidean), on at most ``sample_size`` spots."""
    embedding = np.asarray(embedding)
    sample = None if sample_size is None or sample_size >= len(embedding) else sample_size
    return float(skm.silhouette_score(embedding, np.asarray(labels), sample_size=sample, random_state=random_state))


def davies_bouldin(embedding: np.ndarray, labels) -> float:
    """Davies–Bouldin index (lower is better)."""
    return float(skm.davies_bouldin_score(np.asarray(embedding), np.asarray(labels)))


def neighbour_agreement(labels, adjacency: sp.spmatrix) -> float:
    """Spatial coherence: the fraction of spatial-graph edges whose two spots share a domain."""
    labels = np.asarray(labels)
    coo = sp.coo_matrix(adjacency)
    if coo.nnz == 0:
        return float("nan")
    return float(np.mean(labels[coo.row] == labels[coo.col]))


def morans_i(values, adjacency: sp.spmatrix) -> float:
    """Moran's I of ``values`` over the spatial graph (binary weights): (N/W) Σ w_ij z_i z_j / Σ z_i²."""
    z = np.asarray(values, dtype=np.float64)
    z = z - z.mean()
    weights = sp.csr_matrix(adjacency, dtype=np.float64)
    denominator = float(z @ z)
    if denominator == 0 or weights.sum() == 0:
        return float("nan")
    return float(len(z) / weights.sum() * (z @ (weights @ z)) / denominator)


def domain_morans_i(labels, adjacency: sp.spmatrix) -> float:
    """Spatial autocorrelation of a domain map: mean Moran's I of each domain's indicator, weighted by size."""
    labels = np.asarray(labels)
    domains, counts = np.unique(labels, return_counts=True)
    scores = np.array([morans_i(labels == d, adjacency) for d in domains])
    valid = np.isfinite(scores)
    return float(np.average(scores[valid], weights=counts[valid])) if valid.any() else float("nan")


def evaluate(truth, predicted) -> dict[str, float]:
    """ARI, NMI, AMI, homogeneity and accuracy on the labelled spots, plus how many spots were scored."""
    kept_truth, kept_predicted = labelled(truth, predicted)
    return {
        "ari": ari(kept_truth, kept_predicted),
        "nmi": nmi(kept_truth, kept_predicted),
        "ami": ami(kept_truth, kept_predicted),
        "homogeneity": homogeneity(kept_truth, kept_predicted),
        "accuracy": accuracy(kept_truth, kept_predicted),
        "n_scored": int(len(kept_truth)),
    }


def pseudotime_spearman(pseudotime, labels, order) -> float:
    """Spearman correlation between a pseudotime and an ordered annotation (e.g. cortical layers from white
    matter to layer 1): ``order`` lists the labels in their expected order, and each spot is ranked by its
    label's position. Spots without a label, with a label not in ``order`` or without a pseudotime are left out.
    Positive when the pseudotime runs in the order given."""
    from scipy.stats import spearmanr

    pseudotime = np.asarray(pseudotime, dtype=np.float64)
    labels = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    if len(labels) != len(pseudotime):
        raise InputError(f"the annotation has {len(labels)} labels but the pseudotime has {len(pseudotime)} values")
    position = {str(label): rank for rank, label in enumerate(order)}
    missing = sorted(set(position) - set(labels))
    if len(position) - len(missing) < 2:
        raise InputError(f"order names {len(position)} labels, and fewer than two of them occur in the annotation "
                         f"(labels present: {', '.join(sorted(set(labels))[:20])})")
    ranks = labels.map(position).to_numpy(dtype=np.float64)
    keep = np.isfinite(ranks) & np.isfinite(pseudotime)
    return float(spearmanr(pseudotime[keep], ranks[keep]).statistic)


# -------------------------------------------------------------------------------------------------------------
# Integration: how well slices mix in an embedding
# -------------------------------------------------------------------------------------------------------------

def lisi(embedding: np.ndarray, labels, *, perplexity: float = 30, rows_per_block: int = 4096) -> np.ndarray:
    """Local inverse Simpson's index of ``labels`` per spot (Korsunsky et al. 2019, as in the lisi package).

    Each spot's 3·perplexity − 1 nearest other spots are weighted by a Gaussian kernel on their Euclidean
    distance, its precision found by bisection so that the weights' entropy is log(perplexity); the index is
    1 / Σ_b p_b² with p_b the weight of label b. It runs from 1 (one label around) to the number of labels.
    """
    from sklearn.neighbors import NearestNeighbors

    embedding = np.asarray(embedding, dtype=np.float64)
    codes = pd.Categorical(np.asarray(labels, dtype=object).astype(str)).codes
    n = embedding.shape[0]
    k = min(int(3 * perplexity), n)
    finder = NearestNeighbors(n_neighbors=k).fit(embedding)
    scores = np.empty(n)
    for start in range(0, n, rows_per_block):
        distances, index = finder.kneighbors(embedding[start:start + rows_per_block])
        distances, index = distances[:, 1:], index[:, 1:]  # the spot itself comes first
        weights = _entropy_calibrated_weights(distances, np.log(perplexity))
        simpson = np.zeros(len(weights))
        for code in np.unique(codes):
            simpson += (weights * (codes[index] == code)).sum(axis=1) ** 2
        scores[start:start + rows_per_block] = 1.0 / simpson
    return scores


def _entropy_calibrated_weights(distances: np.ndarray, target_entropy: float, *, tolerance: float = 1e-5,
                                max_tries: int = 50) -> np.ndarray:
    """Row-wise P ∝ exp(−β·d) with β bisected (doubling or halving while unbounded) until H(P) ≈ target."""
    rows = distances.shape[0]
    beta = np.ones(rows)
    low, high = np.full(rows, -np.inf), np.full(rows, np.inf)
    shifted = distances - distances[:, :1]  # the nearest distance subtracted: no underflow, same P and entropy

    def weights_and_entropy(beta):
        weights = np.exp(-shifted * beta[:, None])
        total = weights.sum(axis=1)
        weights /= total[:, None]
        return weights, np.log(total) + beta * (shifted * weights).sum(axis=1)

    weights, entropy = weights_and_entropy(beta)
    for _ in range(max_tries):
        difference = entropy - target_entropy
        active = np.abs(difference) > tolerance
        if not active.any():
            break
        flat, sharp = active & (difference > 0), active & (difference <= 0)  # entropy too high / too low
        low[flat] = beta[flat]
        beta[flat] = np.where(np.isinf(high[flat]), beta[flat] * 2, (beta[flat] + high[flat]) / 2)
        high[sharp] = beta[sharp]
        beta[sharp] = np.where(np.isinf(low[sharp]), beta[sharp] / 2, (beta[sharp] + low[sharp]) / 2)
        weights, entropy = weights_and_entropy(beta)
    return weights


def ilisi(embedding: np.ndarray, batch, *, perplexity: float = 30) -> float:
    """Median integration LISI over spots: the effective number of slices around a spot (1 = no mixing)."""
    return float(np.median(lisi(embedding, batch, perplexity=perplexity)))


def batch_kl(embedding: np.ndarray, batch, *, replicates: int = 200, n_spots: int = 100, max_neighbors: int = 100,
             random_state: int = 1) -> float:
    """BatchKL as in the STAIG paper: in each replicate draw ``n_spots`` spots, take each one's
    k = min(5·#slices, ``max_neighbors``) nearest spots (itself included) and the KL divergence (log₂) of their
    slice mix from the overall mix; average over spots and replicates. 0 means perfectly mixed."""
    from sklearn.neighbors import NearestNeighbors

    embedding = np.asarray(embedding, dtype=np.float64)
    codes = pd.Categorical(np.asarray(batch, dtype=object).astype(str)).codes
    n_batches = codes.max() + 1
    overall = np.bincount(codes, minlength=n_batches) / len(codes)
    k = min(5 * n_batches, max_neighbors, len(codes))
    finder = NearestNeighbors(n_neighbors=k).fit(embedding)
    rng = np.random.default_rng(random_state)
    values = []
    for _ in range(replicates):
        drawn = rng.choice(len(codes), size=min(n_spots, len(codes)), replace=False)
        _, index = finder.kneighbors(embedding[drawn])
        local = np.stack([np.bincount(row, minlength=n_batches) for row in codes[index]]) / k
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(local > 0, local * np.log2(local / overall), 0.0)
        values.append(terms.sum(axis=1).mean())
    return float(np.mean(values))


def graph_connectivity(embedding: np.ndarray, labels, *, n_neighbors: int = 15) -> float:
    """scib's graph connectivity: in the kNN graph of the embedding, for each domain label the fraction of its
    spots in the largest connected component of the subgraph on that label; averaged over labels (1 = best).
    Spots without a label are left out of the averages but stay in the graph."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import kneighbors_graph

    embedding = np.asarray(embedding, dtype=np.float64)
    labels = pd.Series(np.asarray(labels, dtype=object))
    graph = kneighbors_graph(embedding, min(n_neighbors, len(labels) - 1), include_self=False)
    graph = graph.maximum(graph.T)
    fractions = []
    for label in labels.dropna().unique():
        members = np.flatnonzero((labels == label).to_numpy())
        _, component = connected_components(graph[members][:, members], directed=False)
        fractions.append(np.bincount(component).max() / len(members))
    return float(np.mean(fractions))


def batch_silhouette(embedding: np.ndarray, batch, labels) -> float:
    """scib's silhouette_batch: within each domain label, the silhouette of the slice labels, scored 1 − |s| per
    spot and averaged per label, then over labels (1 = slices fully mixed). Labels found in one slice only are
    skipped."""
    embedding = np.asarray(embedding, dtype=np.float64)
    batch = np.asarray(batch, dtype=object).astype(str)
    labels = pd.Series(np.asarray(labels, dtype=object))
    per_label = []
    for label in labels.dropna().unique():
        members = np.flatnonzero((labels == label).to_numpy())
        n_batches = len(np.unique(batch[members]))
        if n_batches < 2 or n_batches >= len(members):
            continue
        scores = skm.silhouette_samples(embedding[members], batch[members])
        per_label.append(np.mean(1 - np.abs(scores)))
    return float(np.mean(per_label)) if per_label else float("nan")


def integration(embedding: np.ndarray, batch, labels=None) -> dict[str, float]:
    """iLISI and BatchKL, plus graph connectivity and batch silhouette when domain ``labels`` are given."""
    scores = {"ilisi": ilisi(embedding, batch), "batch_kl": batch_kl(embedding, batch)}
    if labels is not None:
        scores["graph_connectivity"] = graph_connectivity(embedding, labels)
        scores["batch_silhouette"] = batch_silhouette(embedding, batch, labels)
    return scores
