"""Choosing a training setting without labels: the learning rate by silhouette (the Spotscape paper's appendix
E.2), so that nothing the user cannot know (the annotation) steers the choice."""
from __future__ import annotations

import time

import anndata as ad
import numpy as np

from .. import cluster as _cluster
from .._record import UNS_KEY, record_step
from ..errors import InputError, option

#: The Spotscape paper's grid of learning rates (appendix E.2).
LEARNING_RATE_GRID = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3)


def select_learning_rate(adata: ad.AnnData, method: str = "spotscape", *, n_domains: int | None = None,
                         learning_rates=LEARNING_RATE_GRID, random_state: int = 0, **options) -> ad.AnnData:
    """Train ``method`` once per learning rate and keep the run whose clustering has the best silhouette.

    Each embedding is clustered with k-means into ``n_domains``. The kept run's outputs are stored in ``adata``
    as a plain run would store them. Every rate's silhouette goes to
    ``uns['spatialdomains']['learning_rate_selection']``. This costs one training per rate.

    Parameters
    ----------
    adata : anndata.AnnData
        One slice, or several named by ``batch_key``.
    method : str, optional
        The method to train.
    n_domains : int or None, optional
        The number of k-means clusters. None takes the number of best silhouette, per rate. It is also given
        to a method that takes it (e.g. Spotscape's prototypes).
    learning_rates : sequence of float, optional
        The candidate rates; by default the Spotscape paper's grid.
    random_state : int, optional
        Seed of every training and clustering.
    **options
        The method's settings and run options, but not ``learning_rate``.

    Returns
    -------
    anndata.AnnData
        ``adata``, with the kept run's outputs and the selection's record.
    """
    from ..pipeline import configure, run_method

    if not isinstance(adata, ad.AnnData):
        raise InputError("select_learning_rate takes one AnnData (one slice or several named by batch_key)")
    if "learning_rate" in options:
        raise InputError(f"{option('learning_rate')} is what select_learning_rate chooses: give the candidates as "
                         f"{option('learning_rates')}")
    rates = [float(rate) for rate in learning_rates]
    if not rates or any(not np.isfinite(rate) or rate <= 0 for rate in rates):
        raise InputError(f"{option('learning_rates', learning_rates)}: give one or more positive rates")
    if n_domains is not None and (isinstance(n_domains, bool) or int(n_domains) != n_domains
                                  or not 2 <= n_domains < adata.n_obs):
        raise InputError(f"{option('n_domains', n_domains)}: give a whole number from 2 to the number of spots - 1, "
                         "or None to choose it by silhouette")
    chosen_method, _, run = configure(method, adata, random_state=random_state, learning_rate=rates[0], **options)
    if n_domains is not None and "n_domains" in chosen_method.option_names():
        options["n_domains"] = int(n_domains)  # the method's own expectation (Spotscape: its prototypes)
    key = chosen_method.embedding_key(run)
    started = time.perf_counter()
    scores, best, best_score = {}, None, -np.inf
    for rate in rates:
        work = adata.copy()
        run_method(chosen_method, work, learning_rate=rate, random_state=random_state, **options)
        embedding = np.asarray(work.obsm[key], dtype=np.float64)
        embedding = embedding[np.all(np.isfinite(embedding), axis=1)]
        if n_domains is None:
            result, _ = _cluster.choose_n_domains(embedding, range(2, 16), "kmeans", random_state=random_state)
            labels = result.labels
        else:
            labels = _cluster.kmeans(embedding, int(n_domains), random_state=random_state)
        score = float(_cluster_silhouette(embedding, labels, random_state))
        scores[str(rate)] = score
        if best is None or score > best_score:
            best, best_score = work, score
    for name, value in best.obsm.items():
        adata.obsm[name] = value
    for name, value in best.layers.items():
        if name not in adata.layers or name.startswith(chosen_method.name):
            adata.layers[name] = value
    records = adata.uns.setdefault(UNS_KEY, {})
    for step, value in best.uns[UNS_KEY].items():  # the kept run's records (the model's, image features', ...)
        if step == chosen_method.name or step not in records:
            records[step] = value
    chosen_rate = max(scores, key=scores.get)
    record_step(adata, "learning_rate_selection", {
        "method": chosen_method.name, "learning_rates": rates, "silhouette_by_learning_rate": scores,
        "chosen": float(chosen_rate), "n_domains": n_domains, "clustering": "k-means",
        "rule": "highest silhouette of the k-means clustering of each run's embedding (Spotscape paper, App. E.2)",
        "random_state": random_state, "timings": {"select_learning_rate": time.perf_counter() - started},
    })
    return adata


def _cluster_silhouette(embedding: np.ndarray, labels: np.ndarray, random_state: int) -> float:
    from ..metrics import silhouette

    if len(np.unique(labels)) < 2:
        return -1.0
    return silhouette(embedding, labels, random_state=random_state)
