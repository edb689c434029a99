"""Pseudotime over a learned embedding: SpaceFlow's pseudo-spatiotemporal map, as the Spotscape paper used it.

Neighbours on the embedding → diffusion map → diffusion pseudotime (scanpy's ``neighbors`` and ``diffmap``; the
DPT distance computed here, as :func:`diffusion_pseudotime` explains) from a root spot. SpaceFlow's automatic root is the spot whose summed Euclidean distance to the others is largest,
measured on a random sample of at most 5,000 spots; here the sample is seeded and the root found in it is mapped
back to its spot (the published code uses the sample's row number as if it were the spot's). Every step is
linear in the spots apart from the fixed-size root sample.
"""
from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np

from .._record import record_step
from ..errors import InputError, option
from ..graph import embedding_neighbours

logger = logging.getLogger("spatialdomains")

#: SpaceFlow's cap on the spots among which the automatic root is sought (pairwise distances are quadratic).
ROOT_SAMPLE = 5000


def pseudotime(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_spotscape",
    root_domain: str | None = None,
    root_spot: str | None = None,
    domain_key: str = "domain",
    n_neighbors: int = 20,
    n_dcs: int = 10,
    random_state: int = 0,
    key_added: str = "pseudotime",
) -> ad.AnnData:
    """Diffusion pseudotime of each spot over ``obsm[use_rep]``, into ``obs[key_added]``.

    Pseudotime is 0 at the root and 1 at the far end. Spots without an embedding, or not connected to the
    root, get NaN. The root is ``root_spot``, or the most outlying spot of ``root_domain``, or, with neither,
    SpaceFlow's rule: the most outlying spot of all, so the direction is the data's (give a root to fix it).
    The record (``uns['spatialdomains']['pseudotime']``) names the root and how it was chosen.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the embedding; receives the pseudotime.
    use_rep : str, optional
        Any embedding (``X_spotscape``, ``X_staig``, STAIG's encoder output ``X_staig_encoder``, ...).
    root_domain : str or None, optional
        A category of ``obs[domain_key]`` whose most outlying spot is the root (e.g. white matter, to order
        cortical layers from it).
    root_spot : str or None, optional
        The name of the root spot. Give this or ``root_domain``, not both.
    domain_key : str, optional
        The ``obs`` column of domains that ``root_domain`` names.
    n_neighbors : int, optional
        Neighbours of the embedding's kNN graph (20, as SpaceFlow).
    n_dcs : int, optional
        Diffusion components that set the distances (10, scanpy's default).
    random_state : int, optional
        Seed of the graph, the diffusion map and the root sample.
    key_added : str, optional
        The ``obs`` column that receives the pseudotime.

    Returns
    -------
    anndata.AnnData
        ``adata``, with the pseudotime and its record.
    """
    import scanpy as sc

    started = time.perf_counter()
    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first (e.g. sd.tl.spotscape(adata)) or "
                         f"name an existing embedding with {option('use_rep')}")
    if root_domain is not None and root_spot is not None:
        raise InputError(f"give {option('root_domain')} or {option('root_spot')}, not both")
    for name, value in (("n_neighbors", n_neighbors), ("n_dcs", n_dcs)):
        if isinstance(value, bool) or int(value) != value or value < 2:
            raise InputError(f"{option(name, value)}: give a whole number of at least 2")
    values = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    rows = np.flatnonzero(np.all(np.isfinite(values), axis=1))
    embedding = np.zeros(values.shape, dtype=np.float32)
    embedding[rows] = values[rows]  # rows without values stay out of every step
    if len(rows) <= max(n_neighbors, n_dcs) + 1:
        raise InputError(f"obsm['{use_rep}'] has {len(rows)} spots with values: too few for {option('n_neighbors')}="
                         f"{n_neighbors} neighbours and {n_dcs} diffusion components")
    root, chosen_by = _root(adata, embedding, rows, root_spot, root_domain, domain_key,
                            np.random.default_rng(random_state))
    work = ad.AnnData(embedding[rows])
    sc.pp.neighbors(work, n_neighbors=int(n_neighbors), use_rep="X", random_state=random_state,
                    transformer=embedding_neighbours(len(rows), int(n_neighbors), random_state))
    sc.tl.diffmap(work, n_comps=int(n_dcs) + 1, random_state=random_state)
    values = diffusion_pseudotime(work.obsm["X_diffmap"], work.uns["diffmap_evals"], root,
                                  work.obsp["connectivities"])
    unreachable = ~np.isfinite(values)
    if unreachable.any():
        logger.warning("pseudotime: %d spots are not connected to the root in the %d-neighbour graph of %s and get "
                       "NaN", int(unreachable.sum()), n_neighbors, use_rep)
    values[unreachable] = np.nan
    full = np.full(adata.n_obs, np.nan)
    full[rows] = values
    adata.obs[key_added] = full
    record_step(adata, "pseudotime", {
        "use_rep": use_rep, "key_added": key_added, "root_spot": str(adata.obs_names[rows[root]]),
        "root_chosen_by": chosen_by, "domain_key": domain_key if root_domain is not None else None,
        "n_neighbors": int(n_neighbors), "n_dcs": int(n_dcs), "root_sample": ROOT_SAMPLE,
        "n_spots_unreachable": int(unreachable.sum()), "random_state": random_state,
        "method": "diffusion pseudotime over the embedding's kNN graph (SpaceFlow pSM: scanpy neighbours and diffmap; "
                  "DPT with every diffusion component, see diffusion_pseudotime)",
        "timings": {"pseudotime": time.perf_counter() - started},
    })
    return adata


def _root(adata, embedding: np.ndarray, rows: np.ndarray, root_spot, root_domain, domain_key: str,
          rng) -> tuple[int, str]:
    """The root (its index among ``rows``, the spots with an embedding) and how it was chosen."""
    if root_spot is not None:
        where = np.flatnonzero(np.asarray(adata.obs_names) == str(root_spot))
        if len(where) != 1 or where[0] not in set(rows):
            raise InputError(f"{option('root_spot', root_spot)}: no spot of that name has an embedding "
                             f"(spot names look like '{adata.obs_names[0]}')")
        return int(np.searchsorted(rows, where[0])), "given spot"
    if root_domain is not None:
        members = _domain_members(adata, domain_key, root_domain)[rows]
        if not members.any():
            raise InputError(f"{option('root_domain', root_domain)}: no spot of that domain has an embedding")
        return (_most_outlying(embedding[rows], np.flatnonzero(members), rng),
                f"most outlying spot of {domain_key} '{root_domain}'")
    return _most_outlying(embedding[rows], np.arange(len(rows)), rng), "most outlying spot (SpaceFlow's rule)"


def diffusion_pseudotime(components: np.ndarray, eigenvalues: np.ndarray, root: int, graph) -> np.ndarray:
    """Diffusion pseudotime (Haghverdi et al. 2016) from ``root``, scaled to [0, 1].

    It is the distance from the root over the diffusion components, each weighted by λ/(1 − λ), with the
    stationary one (the first) left out. scanpy's ``dpt`` also drops every component whose eigenvalue is 0.9994
    or more (against float32 rounding). On large, smooth tissue those are the informative components (on 2,000
    spots along a line its pseudotime has Spearman 0.12 with the position, this one 1.0), so here the
    eigenvalues are used in float64, all kept.

    Parameters
    ----------
    components : numpy.ndarray
        The diffusion map, spots × components, the stationary one first.
    eigenvalues : numpy.ndarray
        The eigenvalue of each component, in the same order.
    root : int
        The row of the root spot.
    graph : scipy.sparse.spmatrix
        The neighbour graph the diffusion map came from, to find the root's connected component.

    Returns
    -------
    numpy.ndarray
        Each spot's pseudotime. Spots outside the root's connected component get inf.
    """
    from scipy.sparse.csgraph import connected_components

    values = np.asarray(eigenvalues, dtype=np.float64)[1:]
    basis = np.asarray(components, dtype=np.float64)[:, 1:]
    keep = values < 1 - 1e-12  # components of other connected pieces (eigenvalue 1) carry no distance
    weights = values[keep] / (1 - values[keep])
    distance = np.sqrt((((basis[:, keep] - basis[root, keep]) * weights) ** 2).sum(axis=1))
    _, piece = connected_components(graph, directed=False)
    distance[piece != piece[root]] = np.inf
    reachable = np.isfinite(distance)
    top = distance[reachable].max()
    return np.where(reachable, distance / top if top > 0 else distance, np.inf)


def _domain_members(adata: ad.AnnData, domain_key: str, root_domain) -> np.ndarray:
    if domain_key not in adata.obs:
        raise InputError(f"obs['{domain_key}'] does not exist: cluster first (sd.tl.cluster) or name the column of "
                         f"domains with {option('domain_key')}")
    labels = adata.obs[domain_key].astype(str).to_numpy()
    if str(root_domain) not in set(labels):
        present = sorted(set(adata.obs[domain_key].dropna().astype(str)))
        raise InputError(f"{option('root_domain', root_domain)} is not a value of obs['{domain_key}'] "
                         f"(values: {', '.join(present[:20])})")
    return labels == str(root_domain)


def _most_outlying(embedding: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> int:
    """Among ``candidates`` (row numbers), the one whose summed Euclidean distance to a seeded sample of at most
    :data:`ROOT_SAMPLE` spots is largest (for all spots as candidates: SpaceFlow's root rule)."""
    def sample(pool: np.ndarray) -> np.ndarray:
        return pool if len(pool) <= ROOT_SAMPLE else np.sort(rng.choice(pool, ROOT_SAMPLE, replace=False))

    reference = sample(np.arange(len(embedding)))
    candidates = reference if len(candidates) == len(embedding) else sample(candidates)
    others = embedding[reference].astype(np.float64)
    totals = np.empty(len(candidates))
    for start in range(0, len(candidates), 512):  # blocks keep the pairwise distances small
        block = embedding[candidates[start:start + 512]].astype(np.float64)
        squared = (block ** 2).sum(1)[:, None] + (others ** 2).sum(1)[None, :] - 2 * block @ others.T
        totals[start:start + 512] = np.sqrt(np.maximum(squared, 0)).sum(1)
    return int(candidates[np.argmax(totals)])
