"""Preprocessing recipes, one per method, computed from raw counts without touching the user's AnnData."""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError, option

logger = logging.getLogger("spatialdomains")

#: Below this many genes the input is probably a subset (e.g. pre-selected HVGs) rather than a full panel.
SUBSET_WARNING_GENES = 10_000


#: How a method picks its genes: scanpy's ``seurat_v3`` on raw counts (both papers' choice), ``mvp`` (scanpy's
#: ``seurat`` flavour: mean–variance plot of log-normalised values, binned dispersions) or ``spatial`` (spatially
#: variable genes: largest Moran's I over the spots' 6-nearest-neighbour graph, on log-normalised values).
GENE_SELECTIONS = ("seurat_v3", "mvp", "spatial")
#: Neighbours per spot of the graph over which ``gene_selection='spatial'`` measures Moran's I.
MORANS_I_NEIGHBORS = 6


def highly_variable_genes(counts: sp.spmatrix, n_top_genes: int, selection: str = "seurat_v3",
                          coordinates: np.ndarray | None = None) -> np.ndarray:
    """Indices (ascending) of ``n_top_genes`` genes chosen by ``selection`` (see :data:`GENE_SELECTIONS`);
    ``coordinates`` (spots × 2) are needed for ``'spatial'``.

    When fewer genes are expressed than requested, every expressed gene is kept (logged).
    """
    import scanpy as sc

    if selection not in GENE_SELECTIONS:
        raise InputError(f"{option('gene_selection', selection)}: choose one of {', '.join(GENE_SELECTIONS)}")
    expressed = np.asarray((counts > 0).sum(axis=0)).ravel() > 0
    n_expressed = int(expressed.sum())
    if n_expressed <= n_top_genes:
        logger.info("only %d expressed genes, fewer than %s: keeping them all", n_expressed,
                    option("n_top_genes", n_top_genes))
        return np.flatnonzero(expressed)
    if selection == "spatial":
        return spatially_variable_genes(counts, n_top_genes, coordinates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        if selection == "seurat_v3":
            table = sc.pp.highly_variable_genes(ad.AnnData(sp.csr_matrix(counts)), flavor="seurat_v3",
                                                n_top_genes=n_top_genes, inplace=False)
        else:
            table = sc.pp.highly_variable_genes(ad.AnnData(log_normalise(counts)), flavor="seurat",
                                                n_top_genes=n_top_genes, inplace=False)
    return np.flatnonzero(table["highly_variable"].to_numpy())


def spatially_variable_genes(counts: sp.spmatrix, n_top_genes: int, coordinates: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the ``n_top_genes`` genes of largest Moran's I (scanpy's ``metrics.morans_i``) over
    the symmetric 6-nearest-neighbour graph of ``coordinates``, on log-normalised values. The matrix stays sparse;
    scanpy takes one gene at a time as a dense vector over the spots, so the cost grows with genes × spots
    (linear in the spots) and memory with one gene's values per thread."""
    import scanpy as sc

    from .graph import knn_graph

    if coordinates is None or len(coordinates) != counts.shape[0]:
        raise ValueError("gene selection 'spatial' needs one coordinate pair per spot")
    graph = knn_graph(coordinates, MORANS_I_NEIGHBORS).astype(np.float64)
    values = sp.csr_matrix(log_normalise(counts).T, dtype=np.float64)  # genes × spots, as scanpy expects
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.asarray(sc.metrics.morans_i(graph, values), dtype=np.float64)
    scores[~np.isfinite(scores)] = -np.inf  # genes without variation carry no pattern
    top = np.argsort(-scores, kind="stable")[:n_top_genes]
    return np.sort(top)


def staig_features(
    counts: sp.spmatrix,
    *,
    n_top_genes: int = 3000,
    library_size: np.ndarray | None = None,
    target_sum: float = 1e4,
    max_value: float = 10.0,
    gene_selection: str = "seurat_v3",
    coordinates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """STAIG's single-slice recipe: seurat_v3 HVGs on raw counts (or ``gene_selection``, see
    :func:`highly_variable_genes`), normalise to 1e4 over all genes, log1p,
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
    (X, genes): sparse CSR float32 matrix (spots × F; every step keeps zeros at zero, so it never needs a dense
    spots × genes copy) and the column indices of the selected genes.
    """
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if library_size is None:
        if counts.shape[1] < SUBSET_WARNING_GENES:
            logger.warning(
                "only %d genes: if they are a subset of the measured genes, pass the true per-spot totals "
                "(%s) so that normalisation uses the real library size", counts.shape[1], option("library_size_key"))
        library_size = np.asarray(counts.sum(axis=1)).ravel()
    library_size = np.asarray(library_size, dtype=np.float64)
    if library_size.shape != (counts.shape[0],) or not np.all(np.isfinite(library_size)) or np.any(library_size <= 0):
        raise InputError("library sizes must be one positive, finite number per spot")
    genes = highly_variable_genes(counts, n_top_genes, gene_selection, coordinates)
    selected = counts[:, genes]
    scale = (target_sum / library_size).astype(np.float32)
    x = sp.csr_matrix(sp.diags(scale) @ selected, dtype=np.float32)
    x.data = np.log1p(x.data)
    std = column_std(x)
    std[std == 0] = 1.0
    x = sp.csr_matrix(x @ sp.diags((1.0 / std).astype(np.float32)), dtype=np.float32)
    np.minimum(x.data, max_value, out=x.data)  # log1p ≥ 0, so the zeros stay zeros: the result stays sparse
    return x, genes


def column_std(x: sp.spmatrix, rows_per_chunk: int = 100_000) -> np.ndarray:
    """Standard deviation (ddof 1) of each column of a sparse matrix, accumulated in float64 over chunks of rows,
    so that neither a dense copy nor a float64 copy of the whole matrix is made."""
    x = sp.csr_matrix(x)
    n = x.shape[0]
    total = np.zeros(x.shape[1])
    total_of_squares = np.zeros(x.shape[1])
    for start in range(0, n, rows_per_chunk):
        chunk = x[start:start + rows_per_chunk]
        values = chunk.data.astype(np.float64)
        total += np.bincount(chunk.indices, weights=values, minlength=x.shape[1])
        total_of_squares += np.bincount(chunk.indices, weights=values * values, minlength=x.shape[1])
    mean = total / n
    variance = np.maximum(total_of_squares / n - mean**2, 0.0) * n / max(n - 1, 1)
    return np.sqrt(variance)


def spotscape_features(counts: sp.spmatrix, *, n_top_genes: int = 5000, target_sum: float = 1e4,
                       gene_selection: str = "seurat_v3",
                       coordinates: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """Spotscape's recipe (published order): seurat_v3 HVGs on raw counts (or ``gene_selection``), subset to them,
    normalise each spot to ``target_sum`` over the HVGs, log1p. No scaling, no PCA.

    Returns (X, genes): a sparse float32 matrix (spots × HVGs; zeros stay zero, so the large-data mode never makes
    it dense) and the column indices of the selected genes.
    """
    counts = sp.csr_matrix(counts, dtype=np.float32)
    genes = highly_variable_genes(counts, n_top_genes, gene_selection, coordinates)
    selected = counts[:, genes]
    totals = np.asarray(selected.sum(axis=1), dtype=np.float64).ravel()
    if np.any(totals <= 0):
        raise InputError(f"{int(np.sum(totals <= 0))} spots have no counts in the {len(genes)} highly variable "
                         "genes; filter them out or use more genes (n_top_genes)")
    normalised = sp.diags((target_sum / totals).astype(np.float32)) @ selected
    normalised = sp.csr_matrix(normalised, dtype=np.float32)
    normalised.data = np.log1p(normalised.data)
    return normalised, genes


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
    gene_selection: str = "seurat_v3",
    coordinates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Several slices (rows sorted by slice; ``bounds`` = each slice's (start, end)): seurat_v3 HVGs (or
    ``gene_selection``, with ``coordinates`` in the same row order) per slice on its raw counts, then the genes highly variable in every slice, log1p of counts normalised to
    ``target_sum`` per spot. Each slice is normalised on its own: over its own HVGs (``'hvgs'``, Spotscape's
    published order) or over all genes (``'all'``, STAIG's; ``library_size`` gives the true totals when
    ``counts`` holds a subset of the genes). No scaling.

    Returns (X, genes): sparse CSR float32 matrix (spots × shared genes) and the column indices of those genes.
    """
    if normalise_over not in ("hvgs", "all"):
        raise ValueError(f"normalise_over must be 'hvgs' or 'all', got '{normalise_over}'")
    counts = sp.csr_matrix(counts, dtype=np.float32)
    names = slice_names or [str(q) for q in range(len(bounds))]
    per_slice = [highly_variable_genes(counts[start:end], n_top_genes, gene_selection,
                                       None if coordinates is None else coordinates[start:end])
                 for start, end in bounds]
    shared = per_slice[0]
    for genes in per_slice[1:]:
        shared = np.intersect1d(shared, genes)
    if len(shared) < min_shared_genes:
        sizes = ", ".join(f"{name}: {len(genes)}" for name, genes in zip(names, per_slice))
        raise InputError(
            f"only {len(shared)} genes are highly variable in every slice (HVGs per slice: {sizes}; at least "
            f"{min_shared_genes} shared genes are needed): raise n_top_genes, or check that the slices use the "
            "same gene identifiers (all Ensembl IDs or all symbols) and measure the same tissue")
    pieces = []
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
        pieces.append(normalised)
    logger.info("%d slices: %d genes are highly variable in all of them", len(bounds), len(shared))
    return sp.vstack(pieces, format="csr", dtype=np.float32), shared


# --- Paired multi-omics (SpaMI and the smoothed-PCA baseline) -------------------------------------------------


@dataclass
class OmicsFeatures:
    """One modality after preprocessing: the model's input ``x`` (spots × d, float32), the indices of the input
    features kept, and for RNA the PCA loadings and mean that map a reconstruction back to genes."""

    kind: str
    x: np.ndarray
    features: np.ndarray
    loadings: np.ndarray | None = None
    mean: np.ndarray | None = None


#: Kinds of modality SpaMI preprocesses, and the names and 10x ``feature_types`` that identify each.
OMICS_KINDS = {
    "rna": {"names": ("rna", "gex", "expression", "gene expression", "transcriptome"),
            "feature_types": ("Gene Expression",)},
    "adt": {"names": ("adt", "protein", "proteins", "prot", "cite", "antibody capture"),
            "feature_types": ("Antibody Capture",)},
    "atac": {"names": ("atac", "peaks", "peak", "chromatin", "chromatin accessibility"),
             "feature_types": ("Peaks",)},
}


def log_normalise(counts: sp.spmatrix, target_sum: float = 1e4) -> sp.csr_matrix:
    """Each spot scaled to ``target_sum`` total counts, then log1p (scanpy's normalize_total + log1p)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    if np.any(totals <= 0):
        raise InputError(f"{int(np.sum(totals <= 0))} spots have no counts; remove them before normalising")
    normalised = sp.diags((target_sum / totals).astype(np.float32)) @ counts
    normalised.data = np.log1p(normalised.data)
    return sp.csr_matrix(normalised)


#: SpaMI's RNA PCA runs on the sparse matrix above this many spots (exact, and no dense spots × genes copy: 12 GB
#: at a million spots × 3,000 genes); up to it, on the dense matrix as published (scikit-learn's randomised
#: solver). Both give the same components up to the randomised solver's approximation.
SPARSE_PCA_SPOTS = 50_000


def rna_pca_features(counts: sp.spmatrix, *, min_cells: int = 10, n_top_genes: int = 3000, n_pcs: int = 50,
                     random_state: int = 0) -> OmicsFeatures:
    """SpaMI's RNA recipe: drop genes detected in fewer than ``min_cells`` spots, normalise to 1e4 and log1p,
    keep the ``n_top_genes`` highly variable genes (scanpy's ``seurat`` flavour on the log data; all genes when
    there are fewer), then PCA to ``n_pcs`` components, centred, not scaled."""
    import scanpy as sc

    counts = sp.csr_matrix(counts, dtype=np.float32)
    detected = np.flatnonzero(np.asarray((counts > 0).sum(axis=0)).ravel() >= min_cells)
    if len(detected) < 2:
        raise InputError(f"RNA: only {len(detected)} genes are detected in at least min_cells={min_cells} spots; "
                         "lower min_cells or check that this modality holds counts")
    logged = log_normalise(counts[:, detected])
    if len(detected) > n_top_genes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            table = sc.pp.highly_variable_genes(ad.AnnData(logged), flavor="seurat", n_top_genes=n_top_genes,
                                                inplace=False)
        keep = np.flatnonzero(table["highly_variable"].to_numpy())
    else:
        logger.info("RNA: %d genes pass the filter, not more than n_top_genes=%d: keeping them all",
                    len(detected), n_top_genes)
        keep = np.arange(len(detected))
    selected = logged[:, keep]
    if selected.shape[0] <= SPARSE_PCA_SPOTS:
        selected = selected.toarray()
    scores, loadings, mean = principal_components(selected, n_pcs, random_state=random_state)
    return OmicsFeatures("rna", scores, detected[keep], loadings, mean)


def zscore(x: np.ndarray) -> np.ndarray:
    """Each column centred and divided by its standard deviation (ddof 0); constant columns become 0."""
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def principal_components(x, n_components: int, *, random_state: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred PCA: (scores, loadings V (features × components), mean), float32.

    A dense matrix goes through scikit-learn's default solver; a sparse one is never made dense: it is centred
    implicitly and solved exactly through the features × features covariance (cost linear in the spots).
    Asks for at most min(spots, features) − 1 components."""
    from sklearn.decomposition import PCA

    n_components = int(min(n_components, min(x.shape) - 1))
    if n_components < 1:
        raise InputError(f"PCA needs at least 2 spots and 2 features, got a {x.shape[0]} × {x.shape[1]} matrix")
    if sp.issparse(x):
        pca = PCA(n_components=n_components, svd_solver="covariance_eigh")
        scores = pca.fit_transform(sp.csr_matrix(x, dtype=np.float64))
    else:
        pca = PCA(n_components=n_components, random_state=random_state)
        scores = pca.fit_transform(np.asarray(x, dtype=np.float64))
    return (scores.astype(np.float32), pca.components_.T.astype(np.float32),
            pca.mean_.astype(np.float32))


def clr(counts: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Per-spot centred log-ratio of protein counts, SpaMI's form: x'_g = log1p(x_g / exp(mean_g' log1p(x_g'))),
    the mean taken over all P proteins, zeros included. Dense float32."""
    x = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    x = x.astype(np.float64)
    geometric = np.exp(np.log1p(x).mean(axis=1, keepdims=True))
    return np.log1p(x / geometric).astype(np.float32)


def adt_features(counts: sp.spmatrix, *, min_spots: int = 0) -> OmicsFeatures:
    """SpaMI's protein recipe: drop proteins detected in fewer than ``min_spots`` spots (0 keeps every protein,
    undetected ones included, as published), then CLR per spot. No PCA."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    keep = np.flatnonzero(np.asarray((counts > 0).sum(axis=0)).ravel() >= min_spots)
    if len(keep) < 2:
        raise InputError(f"protein: only {len(keep)} proteins are detected in at least {min_spots} spots; "
                         "lower min_spots or check that this modality holds antibody counts")
    return OmicsFeatures("adt", clr(counts[:, keep]), keep)


def tfidf(counts: sp.spmatrix) -> sp.csr_matrix:
    """TF-IDF of a binary peak matrix as SpaMI computes it: tf = x / row sum, idf = N / column sum, tf·idf; then
    each row L1-normalised and log1p(1e4 ·)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    row_sums = np.asarray(x.sum(axis=1)).ravel()
    column_sums = np.asarray(x.sum(axis=0)).ravel()
    if np.any(row_sums <= 0) or np.any(column_sums <= 0):
        raise InputError("ATAC: every spot and every peak must have at least one open peak / spot for TF-IDF")
    weighted = sp.diags(1.0 / row_sums) @ x @ sp.diags(x.shape[0] / column_sums)
    weighted = sp.diags(1.0 / np.asarray(weighted.sum(axis=1)).ravel()) @ weighted
    weighted = sp.csr_matrix(weighted)
    weighted.data = np.log1p(1e4 * weighted.data)
    return weighted


def atac_lsi_features(counts: sp.spmatrix, *, n_components: int = 50, min_fraction: float = 0.005,
                      random_state: int = 0) -> OmicsFeatures:
    """SpaMI's ATAC recipe: binarise, drop peaks open in fewer than ⌈min_fraction·N⌉ spots, TF-IDF
    (:func:`tfidf`), randomised SVD with ``n_components + 1`` components keeping U only, standardise each spot
    over its components (ddof 1), drop the first component."""
    from sklearn.utils.extmath import randomized_svd

    binary = sp.csr_matrix(counts, dtype=np.float32)
    binary.data = (binary.data > 0).astype(np.float32)
    binary.eliminate_zeros()
    n_spots = binary.shape[0]
    keep = np.flatnonzero(np.asarray(binary.sum(axis=0)).ravel() >= max(1, math.ceil(min_fraction * n_spots)))
    n_svd = min(n_components + 1, len(keep) - 1, n_spots - 1)
    if n_svd < 3:
        raise InputError(f"ATAC: only {len(keep)} peaks are open in at least {min_fraction:.1%} of the spots; "
                         "lower min_fraction or check that this modality holds peak counts")
    selected = binary[:, keep]
    empty = np.asarray(selected.sum(axis=1)).ravel() == 0
    if empty.any():
        raise InputError(f"ATAC: {int(empty.sum())} spots have no open peak among the kept peaks; remove them or "
                         "lower min_fraction")
    u, _, _ = randomized_svd(tfidf(selected), n_svd, random_state=random_state)
    standardised = (u - u.mean(axis=1, keepdims=True)) / u.std(axis=1, ddof=1, keepdims=True)
    return OmicsFeatures("atac", standardised[:, 1:].astype(np.float32), keep)


def balance_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre the features and divide them by one number so that their mean variance is 1: (x', centre, scale).

    Applied to each modality before SpaMI, so that no modality dominates the reconstruction loss only because
    its features are on a larger scale (RNA principal components vary about 18 times more than CLR protein
    values); the shape of the data within a modality is kept. ``x = x' · scale + centre`` maps back.
    """
    centre = x.mean(axis=0)
    scale = float(np.sqrt(x.var(axis=0).mean()))
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("a modality has no variation left after preprocessing; check its counts")
    return ((x - centre) / scale).astype(np.float32), centre.astype(np.float32), scale


def omics_features(counts: sp.spmatrix, kind: str, *, n_pcs: int = 50, n_top_genes: int = 3000,
                   min_cells: int = 10, min_spots: int = 0, atac_min_fraction: float = 0.005,
                   random_state: int = 0) -> OmicsFeatures:
    """SpaMI's recipe for one modality of ``kind`` 'rna' (PCA), 'adt' (CLR) or 'atac' (LSI)."""
    if kind == "rna":
        return rna_pca_features(counts, min_cells=min_cells, n_top_genes=n_top_genes, n_pcs=n_pcs,
                                random_state=random_state)
    if kind == "adt":
        return adt_features(counts, min_spots=min_spots)
    if kind == "atac":
        return atac_lsi_features(counts, n_components=n_pcs, min_fraction=atac_min_fraction,
                                 random_state=random_state)
    raise InputError(f"unknown modality kind '{kind}': use one of {', '.join(OMICS_KINDS)}")


def qc_metrics(adata: ad.AnnData) -> pd.DataFrame:
    """Per spot: total ``counts``, ``genes`` detected and, when the gene names show mitochondrial genes,
    ``% mitochondrial`` counts (what the report's QC figures and headline numbers show)."""
    matrix = sp.csr_matrix(adata.X)
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    metrics = pd.DataFrame({"counts": totals, "genes": np.diff(matrix.indptr)}, index=adata.obs_names)
    mito = mitochondrial_genes(adata)
    if mito.any():
        metrics["% mitochondrial"] = 100 * np.asarray(matrix[:, mito].sum(axis=1)).ravel() / np.maximum(totals, 1)
    return metrics


def mitochondrial_genes(adata: ad.AnnData) -> np.ndarray:
    """Mitochondrial genes by symbol ('MT-' in human, 'mt-' in mouse), from the names or a symbol column."""
    names = adata.var_names.astype(str)
    for column in ("symbol", "gene_symbols", "gene_symbol", "gene_name", "feature_name"):
        if column in adata.var:
            names = pd.Index(adata.var[column].astype(str))
            break
    return np.asarray(pd.Index(names).str.match(r"^(MT|mt)-"), dtype=bool)
