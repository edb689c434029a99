"""Domains from an embedding: the clustering options checked before any training, then clustering (mclust, a
Gaussian mixture, k-means or Leiden) with the optional majority-vote refinement, recorded in the AnnData.

Below the pipeline, which clusters every method's embedding through :func:`cluster`; ``sd.tl.cluster`` is this.
"""
from __future__ import annotations

import time

import anndata as ad
import numpy as np

from . import cluster as _cluster
from . import graph as _graph
from . import io as _io
from . import slices as _slices
from ._record import domain_column, record_step
from .errors import InputError, current_interface, option


def check_cluster_options(method: str, refine, n_domains, choose_by: str = "silhouette") -> None:
    """The clustering options, checked before any training."""
    if choose_by not in _cluster.CHOOSE_BY:
        raise InputError(f"{option('choose_by', choose_by)}: choose one of {', '.join(_cluster.CHOOSE_BY)}")
    if method not in _cluster.METHODS:
        raise InputError(f"{option('cluster_method', method)} is not one of {', '.join(_cluster.METHODS)}")
    if isinstance(refine, (list, tuple, np.ndarray)) or refine not in ("auto", True, False):
        words = {"r": '"auto", TRUE or FALSE', "cli": "auto, yes or no", "samplesheet": "auto, yes or no"}
        choices = words.get(current_interface(), "'auto', True or False")
        raise InputError(f"{option('refine', refine)}: give {choices}")
    if n_domains is not None and (isinstance(n_domains, bool) or int(n_domains) != n_domains or n_domains < 2):
        raise InputError(f"{option('n_domains', n_domains)}: the number of domains must be a whole number of at "
                         "least 2; leave it unset to choose it from the data")


def check_domains_fit(n_domains: int | None, n_spots: int) -> None:
    """A number of domains the spots can hold (checked before training, when the number of spots is known)."""
    if n_domains is not None and n_domains >= n_spots:
        raise InputError(f"{option('n_domains', n_domains)}: the data have {n_spots} spots, so at most "
                         f"{n_spots - 1} domains; choose fewer")


def cluster(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_staig",
    n_domains: int | None = None,
    method: str = "auto",
    refine: str | bool = "auto",
    batch_key: str | None = None,
    n_domains_range: tuple[int, int] = (2, 15),
    choose_by: str = "silhouette",
    refine_neighbors: int = 15,
    random_state: int = _cluster.MCLUST_SEED,
    key_added: str = "domain",
) -> ad.AnnData:
    """Cluster ``obsm[use_rep]`` into domains, stored as a categorical ``obs[key_added]`` ('1'..'K').

    With several slices (``batch_key``) all spots are clustered together, so a domain means the same in every
    slice, and refinement looks for neighbours within each spot's own slice. The score of every candidate number
    goes to the record (``uns['spatialdomains']['cluster']``); :func:`spatialdomains.pl.n_domains_scores` draws them.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the embedding and the coordinates; receives the domains.
    use_rep : str, optional
        The ``obsm`` key of the embedding.
    n_domains : int or None, optional
        The number of domains; None chooses it in ``n_domains_range`` by ``choose_by``.
    method : str, optional
        'auto' (mclust EEE when R has it, else the tied Gaussian mixture), 'mclust', 'gmm', 'kmeans' or 'leiden'.
    refine : {'auto', True, False}, optional
        Majority vote over the ``refine_neighbors`` nearest spots; 'auto' refines regular lattices (Visium, ST)
        only. When refined, the raw clustering is kept in ``obs[key_added + '_unrefined']``.
    batch_key : str or None, optional
        The ``obs`` column naming each spot's slice.
    n_domains_range : tuple of int, optional
        The smallest and largest number tried when ``n_domains`` is None.
    choose_by : {'silhouette', 'stability'}, optional
        'silhouette': the highest, as STAIG; 'stability': the most detailed partition that k-means reproduces on
        subsamples (see :func:`spatialdomains.cluster.stability`).
    refine_neighbors : int, optional
        The spots each vote is taken over.
    random_state : int, optional
        Seeds the clustering (2023 by default, the published STAIG protocol's mclust seed;
        :func:`spatialdomains.tl.find_domains` passes its own).
    key_added : str, optional
        The ``obs`` column that receives the domains.

    Returns
    -------
    anndata.AnnData
        ``adata``, with the domains and the record added.
    """
    check_cluster_options(method, refine, n_domains, choose_by)
    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first (e.g. sd.tl.staig(adata)) "
                         "or name an existing embedding with use_rep")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    has_embedding = np.all(np.isfinite(embedding), axis=1)
    coordinates = _io.spatial_coordinates(adata, rows=has_embedding)
    labels_of_slices = (np.zeros(int(has_embedding.sum()), dtype=int) if batch_key is None else
                        _slices.batch_labels(adata, batch_key).to_numpy()[has_embedding])
    layout = _slices.slice_layout(labels_of_slices)
    started = time.perf_counter()
    if n_domains is None:
        low, high = n_domains_range
        result, _ = _cluster.choose_n_domains(embedding[has_embedding], range(low, high + 1), method,
                                              random_state=random_state, choose_by=choose_by)
        chosen_by = choose_by
    else:
        result = _cluster.cluster_embedding(embedding[has_embedding], int(n_domains), method,
                                            random_state=random_state)
        chosen_by = "user"
    slice_rows = [np.flatnonzero(layout.codes == q) for q in range(layout.n_slices)]
    if refine == "auto":
        refine = all(_graph.is_lattice(coordinates[rows]) for rows in slice_rows)
    labels = result.labels + 1
    if refine:
        adata.obs[f"{key_added}_unrefined"] = domain_column(labels, has_embedding)
        refined = labels.copy()
        for rows in slice_rows:
            refined[rows] = _cluster.refine_labels(labels[rows], coordinates[rows], refine_neighbors)
        labels = refined
    elif f"{key_added}_unrefined" in adata.obs:  # left from an earlier, refined run: no longer true
        del adata.obs[f"{key_added}_unrefined"]
    adata.obs[key_added] = domain_column(labels, has_embedding)
    record_step(adata, "cluster", {
        "use_rep": use_rep, "backend": result.backend, "n_domains": result.n_domains,
        "n_domains_chosen_by": chosen_by, "details": result.details, "refined": bool(refine),
        "refine_neighbors": refine_neighbors if refine else None, "batch_key": batch_key,
        "random_state": random_state, "key_added": key_added,
        "timings": {"cluster": time.perf_counter() - started},
    })
    return adata
