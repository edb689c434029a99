"""Domains from an embedding (clustering, refinement, SpaMI's published Leiden protocol) and the UMAP."""
from __future__ import annotations

import collections
import functools
import logging
import time
import warnings

import anndata as ad
import numpy as np

from .. import cluster as _cluster
from .. import graph as _graph
from .. import io as _io
from .. import slices as _slices
from ..errors import InputError, current_interface, option
from .._record import domain_column, record_step

logger = logging.getLogger("spatialdomains")


def check_cluster_options(method: str, refine, n_domains, choose_by: str = "silhouette") -> None:
    """The clustering options, checked before any training."""
    if choose_by not in _cluster.CHOOSE_BY:
        raise InputError(f"{option('choose_by', choose_by)}: choose one of {', '.join(_cluster.CHOOSE_BY)}")
    if method not in _cluster.METHODS:
        raise InputError(f"cluster_method must be one of {', '.join(_cluster.METHODS)}, got '{method}'")
    if isinstance(refine, (list, tuple, np.ndarray)) or refine not in ("auto", True, False):
        choices = {"r": '"auto", TRUE or FALSE', "cli": "auto, yes or no"}.get(current_interface(),
                                                                               "'auto', True or False")
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

    ``method``: 'auto' (mclust EEE when R has it, else the tied Gaussian mixture), 'mclust', 'gmm', 'kmeans'
    or 'leiden'. ``n_domains=None`` picks the number in ``n_domains_range`` by ``choose_by``: 'silhouette' (the
    highest, as STAIG) or 'stability' (the most detailed partition that k-means reproduces on subsamples; see
    :func:`spatialdomains.cluster.stability`); the score of every candidate goes to the record, and
    :func:`spatialdomains.pl.n_domains_scores` draws them.
    ``refine``: majority vote over the ``refine_neighbors`` nearest spots; 'auto' refines regular lattices
    (Visium, ST) only. When refined, the raw clustering is kept in ``obs[key_added + '_unrefined']``.
    With several slices (``batch_key``), all spots are clustered together, so a domain means the same in every
    slice, and refinement looks for neighbours within each spot's own slice. ``random_state`` seeds the
    clustering (2023 by default, the published STAIG protocol's mclust seed; :func:`find_domains` passes its own).
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


def leiden(
    adata,
    *,
    use_rep: str = "X_spami",
    resolution: float = _cluster.PUBLISHED_LEIDEN_RESOLUTIONS["simulation"],
    n_pcs: int | None = 20,
    n_neighbors: int = 50,
    random_state: int = 0,
    key_added: str = "domain",
):
    """Domains by SpaMI's published protocol, for reproducing its numbers: PCA of ``obsm[use_rep]`` to ``n_pcs``,
    a 50-neighbour graph, Leiden at a hand-tuned ``resolution`` (0.4 for the simulations; MISAR-seq 1.0, P22
    1.18, thymus 0.55 with ``n_pcs=None`` for MISAR). The number of domains is not fixed; for a given number use
    :func:`cluster`. Works on an AnnData or a MuData; stores ``obs[key_added]`` and a record.
    """
    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first (e.g. sd.tl.spami(mdata))")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    has_embedding = np.all(np.isfinite(embedding), axis=1)
    started = time.perf_counter()
    labels = _cluster.published_leiden(embedding[has_embedding], resolution, n_pcs=n_pcs, n_neighbors=n_neighbors,
                                       random_state=random_state)
    if f"{key_added}_unrefined" in adata.obs:
        del adata.obs[f"{key_added}_unrefined"]
    adata.obs[key_added] = domain_column(labels + 1, has_embedding)
    record_step(adata, "cluster", {
        "use_rep": use_rep, "backend": "leiden (published protocol)", "n_domains": int(len(np.unique(labels))),
        "n_domains_chosen_by": "resolution", "details": {"resolution": resolution, "n_pcs": n_pcs,
                                                         "n_neighbors": n_neighbors},
        "refined": False, "random_state": random_state, "key_added": key_added,
        "timings": {"cluster": time.perf_counter() - started},
    })
    return adata


#: UMAP is for display, and its cost grows faster than the spots: above this many spots it is fitted on a seeded
#: random sample of this size, and the other spots are not placed (NaN, not drawn).
UMAP_MAX_SPOTS = 50_000


@functools.cache
def _keep_umap_compiled() -> None:
    """Have numba keep umap-learn's compiled functions on disk, as it does for pynndescent's (``cache=True``).

    umap-learn compiles them anew in every process, which costs about 10 s, most of a small sample's report and
    paid again by each report of a batch; with this only the first process on a machine pays it."""
    import umap.layouts
    import umap.umap_
    from numba.core.registry import CPUDispatcher

    dispatchers = [function for module in (umap.umap_, umap.layouts) for function in vars(module).values()
                   if isinstance(function, CPUDispatcher)]
    # numba files compiled code by function and argument types, not by its options: a function compiled twice
    # (umap-learn's serial and parallel layout epoch) would share one entry, and a seeded run could load the
    # parallel one. Those stay compiled per process.
    compilations = collections.Counter(function.py_func for function in dispatchers)
    for function in dispatchers:
        if compilations[function.py_func] > 1:
            continue
        try:
            _cache_on_disk(function)
        except RuntimeError:  # nowhere writable to keep it (numba names none): compiled per process
            return


def _cache_on_disk(function) -> None:
    """numba's ``enable_caching``, except that a failed write (a disk that fills) leaves the code compiled in
    this process only, rather than failing the run that compiled it."""
    function._cache = _best_effort_cache()(function.py_func)


@functools.cache
def _best_effort_cache() -> type:
    from numba.core.caching import FunctionCache

    class BestEffortCache(FunctionCache):
        told = False

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except OSError as error:
                if not BestEffortCache.told:  # once per process: each failed function would say the same
                    BestEffortCache.told = True
                    logger.info("numba could not keep umap-learn's compiled code on disk (%s), so each new process "
                                "compiles it again (about 10 s); free space there or set NUMBA_CACHE_DIR to a "
                                "folder with room", error)

    return BestEffortCache


def umap(adata: ad.AnnData, *, use_rep: str = "X_staig", n_neighbors: int = 15, min_dist: float = 0.5,
         random_state: int = 0, key_added: str = "X_umap", max_spots: int = UMAP_MAX_SPOTS) -> ad.AnnData:
    """2-d UMAP of ``obsm[use_rep]`` into ``obsm[key_added]``, seeded. Spots without an embedding get NaN, and
    so do all but a random ``max_spots`` of them when there are more (recorded in
    ``uns['spatialdomains']['umap']``)."""
    from sklearn.neighbors import NearestNeighbors
    from umap import UMAP

    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first or name an embedding with use_rep")
    if isinstance(max_spots, bool) or int(max_spots) != max_spots or max_spots < 3:
        raise InputError(f"{option('max_spots', max_spots)}: give a whole number of at least 3")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    rows = np.flatnonzero(np.all(np.isfinite(embedding), axis=1))
    available = len(rows)
    if available < 3:
        raise InputError(f"obsm['{use_rep}'] has {available} spots with a finite embedding: a UMAP needs at least 3")
    if available > max_spots:
        rows = np.sort(np.random.default_rng(random_state).choice(rows, int(max_spots), replace=False))
    _keep_umap_compiled()
    sample = embedding[rows]
    n_neighbors = min(n_neighbors, len(rows) - 1)
    # The exact neighbours come from scikit-learn: umap-learn's own search compiles for about 10 s in each new
    # process, which is most of a small sample's report. Each spot is its own first neighbour, as umap-learn expects.
    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(sample).kneighbors(sample)
    # A seeded UMAP runs on one thread; saying so keeps umap-learn from warning that it changed n_jobs
    reducer = UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state,
                   n_jobs=1 if random_state is not None else -1, precomputed_knn=(indices, distances, None))
    with warnings.catch_warnings():  # that UMAP.transform needs umap-learn's own index: it is not used here
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        values = reducer.fit_transform(sample)
    full = np.full((adata.n_obs, values.shape[1]), np.nan, dtype=np.float32)
    full[rows] = values
    adata.obsm[key_added] = full
    record_step(adata, "umap", {"use_rep": use_rep, "key_added": key_added, "n_spots_placed": len(rows),
                                "n_spots_with_embedding": available, "random_state": random_state,
                                "n_neighbors": int(reducer.n_neighbors), "min_dist": min_dist})
    return adata
