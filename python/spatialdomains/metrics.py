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
