"""Matching the spots of two jointly embedded slices, and moving labels from one to the other.

The match follows SLAT's ``spatial_match`` (the rule the Spotscape paper used for its alignments): each query spot
takes its ``n_candidates`` (20) most cosine-similar reference spots in the embedding, and among them the one nearest
in space once each slice's coordinates are scaled to [0, 1] per axis (this spatial step assumes the two slices face
the same way; turn it off with ``spatial_smoothing=False`` for slices rotated or mirrored against each other).
The embedding must be joint: both slices trained together (e.g. ``sd.tl.staig([reference, query])``), which also
restricts different gene panels (Visium and Xenium, say) to their shared genes.
"""
from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np
import pandas as pd

from .. import io as _io
from .. import metrics as _metrics
from .._record import record_step
from ..errors import InputError, option

logger = logging.getLogger("spatialdomains")

#: Above this many query × reference pairs the candidates come from an approximate nearest-neighbour index
#: (pynndescent), whose cost grows about linearly; below it they are exact.
EXACT_PAIRS_LIMIT = 2_500_000_000


def match_slices(reference: ad.AnnData, query: ad.AnnData, *, use_rep: str = "X_staig", n_candidates: int = 20,
                 spatial_smoothing: bool = True, random_state: int = 0) -> pd.DataFrame:
    """For each query spot with an embedding, its matched reference spot.

    See the module text for the rule.

    Parameters
    ----------
    reference : anndata.AnnData
        The slice whose spots are matched to.
    query : anndata.AnnData
        The slice whose spots are matched. Its embedding must share one space with the reference's.
    use_rep : str, optional
        The ``obsm`` key of the joint embedding.
    n_candidates : int, optional
        How many of the most cosine-similar reference spots each query spot considers.
    spatial_smoothing : bool, optional
        Pick the candidate nearest in space (coordinates scaled to [0, 1] per axis). Turn it off for slices
        rotated or mirrored against each other; then the most similar candidate is taken.
    random_state : int, optional
        Seed of the approximate nearest-neighbour search, used for large slices.

    Returns
    -------
    pandas.DataFrame
        One row per query spot (indexed by its name): ``reference_spot``, ``similarity`` (cosine similarity of
        the pair in the embedding), ``candidates`` (row numbers of the reference spots considered, best first,
        as a list) and ``search`` ('exact' or 'approximate').
    """
    reference_rows, reference_vectors = _embedded(reference, use_rep, "reference")
    query_rows, query_vectors = _embedded(query, use_rep, "query")
    if reference_vectors.shape[1] != query_vectors.shape[1]:
        raise InputError(f"obsm['{use_rep}'] has {reference_vectors.shape[1]} columns in the reference and "
                         f"{query_vectors.shape[1]} in the query: embed both slices together (e.g. "
                         "sd.tl.staig([reference, query])) so they share one space")
    if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 1:
        raise InputError(f"{option('n_candidates', n_candidates)}: give a whole number of at least 1")
    k = int(min(n_candidates, len(reference_rows)))
    if spatial_smoothing and k > 1:  # coordinates checked before the search
        reference_xy = _unit_square(_io.spatial_coordinates(reference)[reference_rows])
        query_xy = _unit_square(_io.spatial_coordinates(query)[query_rows])
    candidates, similarity, search = _most_similar(reference_vectors, query_vectors, k, random_state)
    chosen = np.zeros(len(query_rows), dtype=np.int64)
    if spatial_smoothing and k > 1:
        distance = np.linalg.norm(reference_xy[candidates] - query_xy[:, None, :], axis=2)
        chosen = np.argmin(distance, axis=1)
    picked = candidates[np.arange(len(query_rows)), chosen]
    return pd.DataFrame({
        "reference_spot": np.asarray(reference.obs_names)[reference_rows[picked]],
        "similarity": similarity[np.arange(len(query_rows)), chosen],
        "candidates": list(reference_rows[candidates]),
        "search": search,
    }, index=pd.Index(np.asarray(query.obs_names)[query_rows], name="query_spot"))


def transfer_labels(reference: ad.AnnData, query: ad.AnnData, *, label_key: str = "domain",
                    use_rep: str = "X_staig", n_candidates: int = 20, spatial_smoothing: bool = True,
                    truth_key: str | None = None, random_state: int = 0, key_added: str | None = None) -> ad.AnnData:
    """Label each query spot with ``reference.obs[label_key]`` of its matched reference spot.

    The match is that of :func:`match_slices`. A query spot matched to an unlabelled reference spot gets no
    label. When the query holds its own labels, the transfer is scored: ARI, NMI and accuracy go to the record
    (``query.uns['spatialdomains']['transfer_labels']``) and to the log.

    Parameters
    ----------
    reference : anndata.AnnData
        The labelled slice.
    query : anndata.AnnData
        The slice to label, embedded jointly with the reference. Its ``obs`` receives the results.
    label_key : str, optional
        The reference's ``obs`` column of labels.
    use_rep : str, optional
        The ``obsm`` key of the joint embedding.
    n_candidates : int, optional
        As in :func:`match_slices`.
    spatial_smoothing : bool, optional
        As in :func:`match_slices`.
    truth_key : str or None, optional
        The query's own labels, to score the transfer. By default ``label_key``, when the query has that
        column. After a joint clustering the query's ``domain`` is the model's own, so name an annotation.
    random_state : int, optional
        As in :func:`match_slices`.
    key_added : str or None, optional
        The ``obs`` column of the labels; by default ``'<label_key>_transferred'``.

    Returns
    -------
    anndata.AnnData
        ``query``, with ``obs[key_added]``, ``obs[key_added + '_confidence']`` (the share of the
        ``n_candidates`` most similar reference spots that carry the label given: 1 when all agree) and
        ``obs[key_added + '_reference_spot']``.
    """
    started = time.perf_counter()
    if label_key not in reference.obs:
        raise InputError(f"{option('label_key', label_key)}: the reference has no obs['{label_key}'] (its obs "
                         f"columns: {', '.join(reference.obs) or 'none'})")
    if truth_key is not None and truth_key not in query.obs:
        raise InputError(f"{option('truth_key', truth_key)}: the query has no obs['{truth_key}']")
    key_added = key_added or f"{label_key}_transferred"
    truth_key = truth_key or (label_key if label_key in query.obs else None)  # the query's own, before any write
    written = {key_added, f"{key_added}_confidence", f"{key_added}_reference_spot"}
    if written & {label_key, truth_key}:
        raise InputError(f"{option('key_added', key_added)} would overwrite the query's own "
                         f"obs['{truth_key or label_key}']: choose another key_added")
    matches = match_slices(reference, query, use_rep=use_rep, n_candidates=n_candidates,
                           spatial_smoothing=spatial_smoothing, random_state=random_state)
    labels = reference.obs[label_key]
    label_values = labels.astype(object).where(labels.notna(), None).to_numpy()
    given = label_values[reference.obs_names.get_indexer(matches["reference_spot"])]
    candidate_labels = label_values[np.stack(matches["candidates"].to_numpy())]
    confidence = (candidate_labels == given[:, None]).mean(axis=1)
    rows = query.obs_names.get_indexer(matches.index)
    column = np.full(query.n_obs, None, dtype=object)
    column[rows] = given
    categories = (list(labels.cat.categories) if isinstance(labels.dtype, pd.CategoricalDtype)
                  else sorted({str(v) for v in label_values if v is not None}))
    present = set(given)
    query.obs[key_added] = pd.Categorical(column, categories=[c for c in categories if c in present] or None)
    score = np.full(query.n_obs, np.nan)
    score[rows] = confidence
    query.obs[f"{key_added}_confidence"] = score
    partner = np.full(query.n_obs, None, dtype=object)
    partner[rows] = matches["reference_spot"].to_numpy()
    query.obs[f"{key_added}_reference_spot"] = pd.Categorical(partner)  # writes to h5ad, unlike nullable strings
    scores = None
    if truth_key is not None:
        truth, predicted = query.obs[truth_key].to_numpy(), query.obs[key_added].to_numpy()
        agreed = np.equal(*_metrics.labelled(truth, predicted))
        scores = {"ari": _metrics.ari(truth, predicted), "nmi": _metrics.nmi(truth, predicted),
                  "accuracy": float(agreed.mean()) if len(agreed) else float("nan")}
        logger.info("transfer_labels: against the query's obs['%s']: ARI %.3f, NMI %.3f, accuracy %.3f", truth_key,
                    scores["ari"], scores["nmi"], scores["accuracy"])
    record_step(query, "transfer_labels", {
        "label_key": label_key, "key_added": key_added, "use_rep": use_rep, "n_candidates": int(n_candidates),
        "spatial_smoothing": bool(spatial_smoothing), "search": matches["search"].iloc[0],
        "n_query_spots_labelled": len(rows), "n_reference_spots": int(reference.n_obs),
        "median_confidence": float(np.median(confidence)), "truth_key": truth_key, "scores": scores,
        "rule": "SLAT spatial_match: top cosine candidates in the embedding, nearest in scaled space",
        "random_state": random_state, "timings": {"transfer_labels": time.perf_counter() - started},
    })
    return query


def _embedded(adata: ad.AnnData, use_rep: str, role: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(adata, ad.AnnData):
        raise InputError(f"the {role} must be an AnnData, got {type(adata).__name__}")
    if use_rep not in adata.obsm:
        raise InputError(f"the {role} has no obsm['{use_rep}']: embed both slices together first (e.g. "
                         f"sd.tl.staig([reference, query])) or name the joint embedding with {option('use_rep')}")
    values = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    rows = np.flatnonzero(np.all(np.isfinite(values), axis=1))
    if len(rows) == 0:
        raise InputError(f"the {role}'s obsm['{use_rep}'] has no spot with values")
    vectors = values[rows].astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return rows, vectors / np.maximum(norms, 1e-12)


def _most_similar(reference: np.ndarray, query: np.ndarray, k: int, random_state: int):
    """The ``k`` reference rows of largest cosine similarity to each query row (unit vectors), best first."""
    if len(reference) * len(query) <= EXACT_PAIRS_LIMIT:
        order = np.empty((len(query), k), dtype=np.int64)
        similarity = np.empty((len(query), k), dtype=np.float32)
        block = max(1, 50_000_000 // max(len(reference), 1))
        for start in range(0, len(query), block):
            products = query[start:start + block] @ reference.T
            top = np.argpartition(-products, k - 1, axis=1)[:, :k] if k < len(reference) else \
                np.tile(np.arange(len(reference)), (len(products), 1))
            values = np.take_along_axis(products, top, axis=1)
            ranked = np.argsort(-values, axis=1, kind="stable")
            order[start:start + block] = np.take_along_axis(top, ranked, axis=1)
            similarity[start:start + block] = np.take_along_axis(values, ranked, axis=1)
        return order, similarity, "exact"
    from pynndescent import NNDescent

    index = NNDescent(reference, metric="cosine", n_neighbors=max(30, k), random_state=random_state)
    order, distance = index.query(query, k=k)
    return order.astype(np.int64), (1 - distance).astype(np.float32), "approximate"


def _unit_square(coordinates: np.ndarray) -> np.ndarray:
    """Each axis scaled to [0, 1], as SLAT does before its spatial step."""
    low, span = coordinates.min(axis=0), np.ptp(coordinates, axis=0)
    return (coordinates - low) / np.where(span > 0, span, 1)
