"""SpaMI's published Leiden protocol and the UMAP; clustering an embedding into domains is
:func:`spatialdomains.domains.cluster` (re-exported as ``sd.tl.cluster``)."""
from __future__ import annotations

import collections
import functools
import logging
import time
import warnings

import anndata as ad
import numpy as np

from .. import cluster as _cluster
from .._record import domain_column, record_step
from ..errors import InputError, option

logger = logging.getLogger("spatialdomains")


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
    """Domains by SpaMI's published protocol, for reproducing its numbers.

    PCA of ``obsm[use_rep]`` to ``n_pcs`` components, a graph of ``n_neighbors`` (50) neighbours, then Leiden
    at a hand-tuned ``resolution``. The number of domains is not fixed; for a given number use
    :func:`cluster`.

    Parameters
    ----------
    adata : anndata.AnnData or mudata.MuData
        Holds the embedding; receives the domains.
    use_rep : str, optional
        The ``obsm`` key of the embedding.
    resolution : float, optional
        Leiden's resolution: 0.4 for the simulations; MISAR-seq 1.0, P22 1.18, thymus 0.55.
    n_pcs : int or None, optional
        PCA components; None skips the PCA (as published for MISAR).
    n_neighbors : int, optional
        Neighbours of the graph.
    random_state : int, optional
        Seed of the PCA and Leiden.
    key_added : str, optional
        The ``obs`` column that receives the domains.

    Returns
    -------
    anndata.AnnData or mudata.MuData
        ``adata``, with ``obs[key_added]`` and a record.
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
    """2-d UMAP of ``obsm[use_rep]`` into ``obsm[key_added]``, seeded.

    Spots without an embedding get NaN. So do all but a random ``max_spots`` of them when there are more
    (recorded in ``uns['spatialdomains']['umap']``).

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the embedding; receives the UMAP.
    use_rep : str, optional
        The ``obsm`` key of the embedding.
    n_neighbors : int, optional
        Neighbours of the UMAP graph (at most the spots placed, less one).
    min_dist : float, optional
        UMAP's minimum distance between placed points.
    random_state : int, optional
        Seed of the sample and the layout.
    key_added : str, optional
        The ``obsm`` key that receives the UMAP.
    max_spots : int, optional
        The most spots placed; above it, a seeded random sample of this size.

    Returns
    -------
    anndata.AnnData
        ``adata``, with the UMAP and its record.
    """
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
