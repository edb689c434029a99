"""Marker genes per domain: scanpy's Wilcoxon rank-sum test, one domain against all others, as a tidy table."""
from __future__ import annotations

import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import h5ad_safe
from ..errors import InputError
from ..pp import log_normalise

#: Columns of the marker table, one row per (domain, gene).
MARKER_COLUMNS = ["domain", "gene", "symbol", "gene_id", "score", "log2fc", "pvalue", "padj", "pct_in", "pct_out",
                  "significant"]
#: The p values ``markers`` can filter on, and the table column that holds each.
PVALUES = {"adjusted": "padj", "raw": "pvalue"}
_SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "symbol", "symbols", "gene_name", "gene_names", "feature_name")


def markers(adata: ad.AnnData, groupby: str = "domain", *, layer: str | None = None, min_log2fc: float = 0.25,
            max_pvalue: float = 0.05, pvalue: str = "adjusted", symbol_column: str | None = None,
            key_added: str | None = "markers") -> pd.DataFrame:
    """Per-domain differential expression (Wilcoxon rank-sum test, Benjamini–Hochberg adjusted p).

    Raw counts (``X`` or ``layer``) are normalised to 10,000 per spot and log1p-transformed first; a matrix that
    is already log-normalised is used as it is. Spots without a domain are left out. Every gene of every domain
    is in the table: ``gene`` (as named in ``var_names``), ``symbol`` (from ``symbol_column``, a symbol column of
    ``var``, or for Ensembl/Entrez IDs the species' OrgDb; else the name), ``gene_id`` (``var['gene_ids']`` when
    present, else the name), ``log2fc`` (scanpy's, from the means of expm1 values), ``pvalue`` (raw), ``padj``
    (Benjamini–Hochberg), ``pct_in``/``pct_out`` (fraction of spots with any expression in / outside the domain)
    and ``significant`` (|log2fc| > ``min_log2fc`` and p < ``max_pvalue``), sorted by domain then score. The
    ``pvalue`` argument chooses that p: ``'adjusted'`` (the ``padj`` column, the default) or ``'raw'`` (the
    ``pvalue`` column; the STAIG paper's filter is raw p < 0.05). Stored in ``adata.uns[key_added]`` with the
    parameters in ``adata.uns['spatialdomains']['markers']`` unless ``key_added`` is None.
    """
    import scanpy as sc

    if pvalue not in PVALUES:
        raise InputError(f"pvalue must be one of {', '.join(PVALUES)}, not '{pvalue}'")
    if groupby not in adata.obs:
        raise InputError(f"groupby: obs['{groupby}'] does not exist (obs columns: {', '.join(adata.obs)}); "
                         "find domains first (spatialdomains.find_domains) or name the column that holds them")
    labels = adata.obs[groupby]
    has_domain = labels.notna().to_numpy()
    present = labels[has_domain].astype(str)
    declared = labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else sorted(present.unique())
    domains = pd.Categorical(present, categories=[str(c) for c in declared if str(c) in set(present)])
    if len(domains.categories) < 2:
        raise InputError(f"obs['{groupby}'] holds fewer than two domains; markers compare a domain with the rest")
    start = time.perf_counter()
    expression, normalised_here = _log_expression(adata, layer, has_domain)
    work = ad.AnnData(X=expression, obs=pd.DataFrame({"group": domains}, index=adata.obs_names[has_domain]),
                      var=pd.DataFrame(index=adata.var_names.astype(str)))
    work.uns["log1p"] = {"base": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sc.tl.rank_genes_groups(work, "group", method="wilcoxon", pts=True, use_raw=False)
    table = _tidy(work, symbols=_symbols(adata, symbol_column), gene_ids=_gene_ids(adata))
    table["significant"] = (table["log2fc"].abs() > min_log2fc) & (table[PVALUES[pvalue]] < max_pvalue)
    if key_added is not None:
        adata.uns[key_added] = table
        record = {"groupby": groupby, "layer": layer, "test": "wilcoxon", "correction": "benjamini-hochberg",
                  "min_log2fc": min_log2fc, "pvalue": pvalue, "max_pvalue": max_pvalue,
                  "normalised_here": normalised_here, "seconds": time.perf_counter() - start}
        adata.uns.setdefault("spatialdomains", {})["markers"] = h5ad_safe(record)
    return table


def top_markers(table: pd.DataFrame, n: int = 5, *, significant_only: bool = True) -> pd.DataFrame:
    """The ``n`` best up-regulated genes of each domain (by score)."""
    up = table[table["log2fc"] > 0]
    if significant_only:
        up = up[up["significant"]]
    return up.sort_values(["domain", "score"], ascending=[True, False]).groupby("domain", observed=True).head(n)


def expression_summary(adata: ad.AnnData, genes: list[str], *, key: str = "domain", layer: str | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per domain × gene: mean log-normalised expression, and the fraction of spots expressing the gene."""
    labels = adata.obs[key]
    has_domain = labels.notna().to_numpy()
    columns = adata.var_names.get_indexer(genes)
    if (columns < 0).any():
        raise InputError(f"genes not in var_names: {', '.join(np.asarray(genes)[columns < 0][:5])}")
    expression, _ = _log_expression(adata, layer, has_domain)
    expression = expression[:, columns]
    groups = labels[has_domain].astype("category")
    domains = [d for d in groups.cat.categories if (groups == d).any()]
    means, fractions = [], []
    for domain in domains:
        block = expression[(groups == domain).to_numpy()]
        means.append(np.asarray(block.mean(axis=0)).ravel())
        fractions.append(np.asarray((block > 0).mean(axis=0)).ravel())
    index = pd.Index([str(d) for d in domains], name=key)
    return pd.DataFrame(means, index=index, columns=genes), pd.DataFrame(fractions, index=index, columns=genes)


def _log_expression(adata: ad.AnnData, layer: str | None, rows: np.ndarray) -> tuple[sp.csr_matrix, bool]:
    if layer is not None and layer not in adata.layers:
        raise InputError(f"layer '{layer}' does not exist (layers: {', '.join(adata.layers) or 'none'})")
    matrix = adata.layers[layer] if layer is not None else adata.X
    matrix = sp.csr_matrix(matrix)[np.flatnonzero(rows)]
    values = matrix.data
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0):
        where = f"layers['{layer}']" if layer else "X"
        raise InputError(f"{where} has negative or non-finite values: pass raw counts or log-normalised data")
    if values.size and np.all(values == np.round(values)):
        return log_normalise(matrix), True
    return sp.csr_matrix(matrix, dtype=np.float32), False


def _symbols(adata: ad.AnnData, column: str | None) -> np.ndarray:
    """Each gene's symbol: from ``var[column]``, else a symbol column the input has, else (for Ensembl or Entrez
    IDs) the species' OrgDb; genes without one keep their name."""
    from .annotation import gene_symbols

    if column is not None:
        if column not in adata.var:
            raise InputError(f"symbol_column: var['{column}'] does not exist (var columns: {', '.join(adata.var)})")
        return adata.var[column].astype(str).to_numpy()
    for candidate in _SYMBOL_COLUMNS:
        if candidate in adata.var:
            return adata.var[candidate].astype(str).to_numpy()
    return gene_symbols(adata.var_names).to_numpy()


def _gene_ids(adata: ad.AnnData) -> np.ndarray:
    """Each gene's stable ID: ``var['gene_ids']`` (as Space Ranger's features give it) when present, else its name."""
    for candidate in ("gene_ids", "gene_id", "ensembl_id"):
        if candidate in adata.var:
            return adata.var[candidate].astype(str).to_numpy()
    return np.asarray(adata.var_names, dtype=str)


def _tidy(work: ad.AnnData, symbols: np.ndarray, gene_ids: np.ndarray) -> pd.DataFrame:
    result = work.uns["rank_genes_groups"]
    genes = work.var_names
    symbol_of, id_of = pd.Series(symbols, index=genes), pd.Series(gene_ids, index=genes)
    pts, pts_rest = result["pts"], result["pts_rest"]
    parts = []
    for domain in work.obs["group"].cat.categories:
        ranked = pd.Index(result["names"][domain])
        parts.append(pd.DataFrame({
            "domain": domain, "gene": ranked, "symbol": symbol_of.reindex(ranked).to_numpy(),
            "gene_id": id_of.reindex(ranked).to_numpy(),
            "score": result["scores"][domain].astype(float), "log2fc": result["logfoldchanges"][domain].astype(float),
            "pvalue": result["pvals"][domain].astype(float), "padj": result["pvals_adj"][domain].astype(float),
            "pct_in": pts[domain].reindex(ranked).to_numpy(float), "pct_out": pts_rest[domain].reindex(ranked).to_numpy(float),
        }))
    table = pd.concat(parts, ignore_index=True)
    table["domain"] = pd.Categorical(table["domain"], categories=list(work.obs["group"].cat.categories))
    table["significant"] = False
    return table[MARKER_COLUMNS]
