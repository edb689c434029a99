"""Preprocessing recipes, one per method, computed from raw counts without touching the user's AnnData."""
from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .errors import InputError

logger = logging.getLogger("spatialdomains")

#: Below this many genes the input is probably a subset (e.g. pre-selected HVGs) rather than a full panel.
SUBSET_WARNING_GENES = 10_000


def highly_variable_genes(counts: sp.spmatrix, n_top_genes: int) -> np.ndarray:
    """Indices of the ``n_top_genes`` most variable genes by scanpy's ``seurat_v3`` flavour on raw counts.

    When fewer genes are expressed than requested, every expressed gene is kept (logged).
    """
    import scanpy as sc

    expressed = np.asarray((counts > 0).sum(axis=0)).ravel() > 0
    n_expressed = int(expressed.sum())
    if n_expressed <= n_top_genes:
        logger.info("only %d expressed genes, fewer than n_top_genes=%d: keeping them all", n_expressed, n_top_genes)
        return np.flatnonzero(expressed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        table = sc.pp.highly_variable_genes(ad.AnnData(sp.csr_matrix(counts)), flavor="seurat_v3",
                                            n_top_genes=n_top_genes, inplace=False)
    return np.flatnonzero(table["highly_variable"].to_numpy())


def staig_features(
    counts: sp.spmatrix,
    *,
    n_top_genes: int = 3000,
    library_size: np.ndarray | None = None,
    target_sum: float = 1e4,
    max_value: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """STAIG's single-slice recipe: seurat_v3 HVGs on raw counts, normalise to 1e4 over all genes, log1p,
    divide each gene by its standard deviation without centring, clip at 10. No PCA.

    Parameters
    ----------
    counts
        Raw counts, spots × genes.
    n_top_genes
        Number of highly variable genes kept (F).
    library_size
        True per-spot totals when ``counts`` holds only a subset of the genes; by default the row sums.

    Returns
    -------
    (X, genes): dense float32 matrix (spots × F) and the column indices of the selected genes.
    """
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if library_size is None:
        if counts.shape[1] < SUBSET_WARNING_GENES:
            logger.warning(
                "only %d genes: if they are a subset of the measured genes, pass the true per-spot totals "
                "(library_size_key) so that normalisation uses the real library size", counts.shape[1])
        library_size = np.asarray(counts.sum(axis=1)).ravel()
    library_size = np.asarray(library_size, dtype=np.float64)
    if library_size.shape != (counts.shape[0],) or not np.all(np.isfinite(library_size)) or np.any(library_size <= 0):
        raise InputError("library sizes must be one positive, finite number per spot")
    genes = highly_variable_genes(counts, n_top_genes)
    selected = counts[:, genes]
    scale = (target_sum / library_size).astype(np.float32)
    normalised = sp.diags(scale) @ selected
    normalised.data = np.log1p(normalised.data)
    x = normalised.toarray()
    std = x.std(axis=0, ddof=1)
    std[std == 0] = 1.0
    x /= std
    np.minimum(x, max_value, out=x)
    return x.astype(np.float32, copy=False), genes


def spotscape_features(counts: sp.spmatrix, *, n_top_genes: int = 5000,
                       target_sum: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """Spotscape's recipe (published order): seurat_v3 HVGs on raw counts, subset to them, normalise each spot
    to ``target_sum`` over the HVGs, log1p. No scaling, no PCA.

    Returns (X, genes): dense float32 matrix (spots × HVGs) and the column indices of the selected genes.
    """
    counts = sp.csr_matrix(counts, dtype=np.float32)
    genes = highly_variable_genes(counts, n_top_genes)
    selected = counts[:, genes]
    totals = np.asarray(selected.sum(axis=1), dtype=np.float64).ravel()
    if np.any(totals <= 0):
        raise InputError(f"{int(np.sum(totals <= 0))} spots have no counts in the {len(genes)} highly variable "
                         "genes; filter them out or use more genes (n_top_genes)")
    normalised = sp.diags((target_sum / totals).astype(np.float32)) @ selected
    normalised.data = np.log1p(normalised.data)
    return normalised.toarray().astype(np.float32, copy=False), genes


#: Fewer genes than this in the intersection of the slices' HVGs cannot carry a shared embedding.
MIN_SHARED_GENES = 100


def multi_slice_features(
    counts: sp.spmatrix,
    bounds: list[tuple[int, int]],
    *,
    n_top_genes: int = 5000,
    normalise_over: str = "hvgs",
    library_size: np.ndarray | None = None,
    target_sum: float = 1e4,
    min_shared_genes: int = MIN_SHARED_GENES,
    slice_names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Several slices (rows sorted by slice; ``bounds`` = each slice's (start, end)): seurat_v3 HVGs per slice
    on its raw counts, then the genes highly variable in every slice, log1p of counts normalised to
    ``target_sum`` per spot. Each slice is normalised on its own: over its own HVGs (``'hvgs'``, Spotscape's
    published order) or over all genes (``'all'``, STAIG's; ``library_size`` gives the true totals when
    ``counts`` holds a subset of the genes). No scaling.

    Returns (X, genes): dense float32 matrix (spots × shared genes) and the column indices of those genes.
    """
    if normalise_over not in ("hvgs", "all"):
        raise ValueError(f"normalise_over must be 'hvgs' or 'all', got '{normalise_over}'")
    counts = sp.csr_matrix(counts, dtype=np.float32)
    names = slice_names or [str(q) for q in range(len(bounds))]
    per_slice = [highly_variable_genes(counts[start:end], n_top_genes) for start, end in bounds]
    shared = per_slice[0]
    for genes in per_slice[1:]:
        shared = np.intersect1d(shared, genes)
    if len(shared) < min_shared_genes:
        sizes = ", ".join(f"{name}: {len(genes)}" for name, genes in zip(names, per_slice))
        raise InputError(
            f"only {len(shared)} genes are highly variable in every slice (HVGs per slice: {sizes}; at least "
            f"{min_shared_genes} shared genes are needed): raise n_top_genes, or check that the slices use the "
            "same gene identifiers (all Ensembl IDs or all symbols) and measure the same tissue")
    x = np.empty((counts.shape[0], len(shared)), dtype=np.float32)
    for name, (start, end), genes in zip(names, bounds, per_slice):
        block = counts[start:end]
        if normalise_over == "all" and library_size is not None:
            totals = np.asarray(library_size[start:end], dtype=np.float64)
        else:
            totals = np.asarray((block[:, genes] if normalise_over == "hvgs" else block).sum(axis=1),
                                dtype=np.float64).ravel()
        if np.any(totals <= 0):
            raise InputError(f"slice {name}: {int(np.sum(totals <= 0))} spots have no counts in the genes used "
                             "for normalisation; filter them out or use more genes (n_top_genes)")
        normalised = sp.diags((target_sum / totals).astype(np.float32)) @ block[:, shared]
        normalised.data = np.log1p(normalised.data)
        x[start:end] = normalised.toarray()
    logger.info("%d slices: %d genes are highly variable in all of them", len(bounds), len(shared))
    return x, shared
