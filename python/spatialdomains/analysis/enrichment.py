"""Over-representation analysis per domain: clusterProfiler's ``enrichGO`` when installed, else an exact fallback.

The fallback (:func:`enrich`) repeats clusterProfiler's (DOSE's ``enricher_internal``) computation step for step:

* a term is tested only when at least one query gene is annotated to it;
* the background ``N`` is the annotated genes (intersected with ``universe`` when given); a term's size ``M`` is its
  genes within that background, kept when ``min_size <= M <= max_size``;
* ``n`` is the number of query genes with at least one annotation, ``k`` the query genes in the term (within the
  background); p = P(X >= k) for X ~ Hypergeometric(N, M, n) (R: ``phyper(k - 1, M, N - M, n, lower.tail=FALSE)``);
* ``p.adjust`` is Benjamini–Hochberg over the tested terms; ``qvalue`` is Storey's q-value with lambda = 0.05
  (NA when it cannot be estimated, as clusterProfiler leaves it);
* columns ID, Description, GeneRatio ('k/n'), BgRatio ('M/N'), pvalue, p.adjust, qvalue, geneID ('/'-joined, in
  query order), Count; rows ordered by p-value; significant rows are those with pvalue and p.adjust <= the p-value
  cutoff and, when every q-value is defined, qvalue <= the q-value cutoff.
"""
from __future__ import annotations

import functools
import os
import subprocess
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .._utils import logger, running_inside_r
from ..errors import BackendUnavailable, InputError
from . import annotation
from .annotation import GeneSets

RESULT_COLUMNS = ["ID", "Description", "GeneRatio", "BgRatio", "pvalue", "p.adjust", "qvalue", "geneID", "Count"]
ENGINES = ("auto", "clusterProfiler", "fallback")


def enrich(genes: Sequence[str], gene_sets: GeneSets, *, universe: Sequence[str] | None = None,
           min_size: int = 10, max_size: int = 500, p_adjust_method: str = "BH") -> pd.DataFrame:
    """Every tested term for one gene list, clusterProfiler's columns, ordered by p-value (no cutoff applied)."""
    query = pd.Index(pd.unique(pd.Series(genes, dtype=str)))
    pairs = gene_sets.pairs
    query_pairs = pairs[pairs["gene"].isin(query)]
    if query_pairs.empty:
        logger.info("no query gene is in the gene sets (expected IDs like %s)",
                    ", ".join(pairs["gene"].drop_duplicates().head(5)))
        return pd.DataFrame(columns=RESULT_COLUMNS)
    n_annotated_query = query_pairs["gene"].nunique()
    background = gene_sets.genes if universe is None else gene_sets.genes.intersection(pd.Index(universe, dtype=str))
    in_background = pairs[pairs["gene"].isin(background)]
    term_sizes = in_background["term"].value_counts()

    tested = pd.Index(np.sort(query_pairs["term"].unique()))
    sizes = term_sizes.reindex(tested, fill_value=0)
    tested = tested[(sizes >= min_size) & (sizes <= max_size)]
    if len(tested) == 0:
        logger.info("no gene set has between %d and %d genes in the background", min_size, max_size)
        return pd.DataFrame(columns=RESULT_COLUMNS)
    sizes = sizes.reindex(tested)

    hits = query_pairs[query_pairs["gene"].isin(background) & query_pairs["term"].isin(tested)]
    query_order = pd.Series(np.arange(len(query)), index=query)
    hits = hits.assign(order=query_order.reindex(hits["gene"]).to_numpy()).sort_values(["term", "order"])
    hit_genes = hits.groupby("term", sort=False)["gene"].agg("/".join).reindex(tested, fill_value="")
    counts = hits["term"].value_counts().reindex(tested, fill_value=0).to_numpy()

    n_background = len(background)
    pvalues = stats.hypergeom.sf(counts - 1, n_background, sizes.to_numpy(), n_annotated_query)
    pvalues = np.clip(pvalues, 0.0, 1.0)
    result = pd.DataFrame({
        "ID": tested.to_numpy(dtype=object),
        "Description": gene_sets.names.reindex(tested).fillna(pd.Series(tested, index=tested)).to_numpy(dtype=object),
        "GeneRatio": [f"{k}/{n_annotated_query}" for k in counts],
        "BgRatio": [f"{m}/{n_background}" for m in sizes.to_numpy()],
        "pvalue": pvalues,
        "p.adjust": p_adjust(pvalues, p_adjust_method),
        "qvalue": storey_qvalues(pvalues),
        "geneID": hit_genes.to_numpy(dtype=object),
        "Count": counts.astype(int),
    })
    return result.sort_values("pvalue", kind="stable").reset_index(drop=True)


def significant(result: pd.DataFrame, *, pvalue_cutoff: float = 0.05, qvalue_cutoff: float = 0.2) -> pd.DataFrame:
    """The rows clusterProfiler reports: pvalue and p.adjust within the cutoff, qvalue too when all are defined."""
    keep = (result["pvalue"] <= pvalue_cutoff) & (result["p.adjust"] <= pvalue_cutoff)
    kept = result[keep]
    if not kept["qvalue"].isna().any():
        kept = kept[kept["qvalue"] <= qvalue_cutoff]
    return kept


def p_adjust(pvalues, method: str = "BH") -> np.ndarray:
    """R's ``p.adjust`` for 'BH' (alias 'fdr'), 'BY', 'bonferroni', 'holm' and 'none'."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
        return _unsort(adjusted, order)
    if method in ("BH", "fdr", "BY"):
        order = np.argsort(-p, kind="stable")  # decreasing, as R's order(p, decreasing = TRUE)
        ranks = np.arange(m, 0, -1)
        factor = np.sum(1.0 / np.arange(1, m + 1)) if method == "BY" else 1.0
        adjusted = np.minimum(1.0, np.minimum.accumulate(factor * m / ranks * p[order]))
        return _unsort(adjusted, order)
    raise InputError(f"p_adjust_method '{method}' is not supported: use BH, fdr, BY, bonferroni, holm or none")


def storey_qvalues(pvalues, lam: float = 0.05) -> np.ndarray:
    """Storey's q-values as clusterProfiler asks for them (``qvalue(p, lambda = 0.05)``); NaN where undefined.

    pi0 = min(1, #{p >= lambda} / (m (1 - lambda))); q = pi0 x BH(p). When no p-value reaches lambda, pi0 is 0 and
    the qvalue package stops, so clusterProfiler reports NA: so do we.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if len(p) == 0:
        return p.copy()
    pi0 = min(1.0, float(np.mean(p >= lam)) / (1.0 - lam))
    if pi0 <= 0:
        return np.full(len(p), np.nan)
    return pi0 * p_adjust(p, "BH")


def enrich_go(gene_lists: Mapping[str, Sequence[str]] | pd.DataFrame, *, universe: Sequence[str] | None = None,
              ontology: str = "BP", species: str = "auto", key_type: str = "auto",
              gene_sets: str | os.PathLike | GeneSets | None = None, engine: str = "auto",
              min_size: int = 10, max_size: int = 500, p_adjust_method: str = "BH",
              pvalue_cutoff: float = 0.05, qvalue_cutoff: float = 0.2, org_db: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """GO enrichment of each domain's genes: one tidy table (``domain`` + clusterProfiler's columns).

    ``gene_lists`` maps domain → genes, or is a marker table from :func:`spatialdomains.analysis.markers` (its
    significant up-regulated genes per domain are used). ``universe``: the genes that could have been found, i.e.
    the genes measured (default: every annotated gene, clusterProfiler's default). ``gene_sets`` (a GMT path or
    :class:`GeneSets`) replaces GO for any species. ``species``/``key_type`` 'auto' are read from the gene IDs
    (Ensembl versions are stripped). ``engine``: 'clusterProfiler' (R, through rpy2), 'fallback' (this module's
    exact re-implementation) or 'auto' (clusterProfiler when installed). Rows pass clusterProfiler's cutoffs
    (set both to 1 for every tested term). ``result.attrs`` records the engine, the annotation and the parameters.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    lists = _gene_lists(gene_lists)
    lists = {domain: list(annotation.strip_ensembl_versions(genes)) for domain, genes in lists.items()}
    if universe is not None:
        universe = list(annotation.strip_ensembl_versions(universe))
    if isinstance(gene_sets, (str, os.PathLike)):
        gene_sets = annotation.read_gmt(gene_sets)
    every_gene = universe if universe is not None else [g for genes in lists.values() for g in genes]
    if gene_sets is None:
        if species == "auto":
            species = annotation.detect_species(every_gene)
        if key_type == "auto":
            key_type = annotation.detect_key_type(every_gene, species=species, org_db=org_db)
    chosen = _choose_engine(engine)
    params = {"ontology": ontology if gene_sets is None else None, "species": species if gene_sets is None else None,
              "key_type": key_type if gene_sets is None else None, "min_size": min_size, "max_size": max_size,
              "p_adjust_method": p_adjust_method, "pvalue_cutoff": pvalue_cutoff, "qvalue_cutoff": qvalue_cutoff,
              "universe_size": None if universe is None else len(set(universe))}
    if chosen == "clusterProfiler":
        from . import _clusterprofiler

        tables, source = _clusterprofiler.enrich(lists, universe=universe, ontology=ontology, key_type=key_type,
                                                 org_package=org_db or annotation.ORG_PACKAGES.get(species),
                                                 gene_sets=gene_sets, min_size=min_size, max_size=max_size,
                                                 p_adjust_method=p_adjust_method)
    else:
        if gene_sets is None:
            gene_sets = annotation.go_gene_sets(ontology, key_type=key_type, species=species, org_db=org_db,
                                                cache_dir=cache_dir)
        tables = {domain: enrich(genes, gene_sets, universe=universe, min_size=min_size, max_size=max_size,
                                 p_adjust_method=p_adjust_method) for domain, genes in lists.items()}
        source = gene_sets.source
    parts = [significant(table, pvalue_cutoff=pvalue_cutoff, qvalue_cutoff=qvalue_cutoff).assign(domain=domain)
             for domain, table in tables.items()]
    parts = [part for part in parts if len(part)]
    result = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESULT_COLUMNS + ["domain"]))
    result = result[["domain"] + RESULT_COLUMNS]
    result.insert(result.columns.get_loc("geneID") + 1, "geneSymbols", _symbols_of(result["geneID"], gene_lists))
    result.attrs.update({"engine": chosen, "annotation": source, "parameters": params})
    return result


def _symbols_of(gene_ids: pd.Series, gene_lists) -> list[str]:
    """The '/'-joined genes of each term as symbols: from the marker table's own symbols when it has them, else
    from the OrgDb (IDs without a symbol stay as they are)."""
    ids = sorted({gene for joined in gene_ids.astype(str) for gene in joined.split("/") if gene})
    if isinstance(gene_lists, pd.DataFrame) and "symbol" in gene_lists:
        genes = annotation.strip_ensembl_versions(gene_lists["gene"])
        symbol_of = dict(zip(genes, gene_lists["symbol"].astype(str)))
    else:
        symbol_of = annotation.gene_symbols(ids).to_dict()
    return ["/".join(symbol_of.get(gene, gene) for gene in joined.split("/")) for joined in gene_ids.astype(str)]


def clusterprofiler_available() -> bool:
    """True when clusterProfiler can be called from this Python (R, rpy2 and the R package present, not in R)."""
    if running_inside_r():
        return False
    try:
        import rpy2  # noqa: F401
    except ImportError:
        return False
    return _r_package_installed("clusterProfiler")


def _choose_engine(engine: str) -> str:
    if engine == "fallback":
        return "fallback"
    available = clusterprofiler_available()
    if engine == "clusterProfiler" and not available:
        reason = ("Python is running inside R: call clusterProfiler from R (domainReport does)"
                  if running_inside_r() else
                  "it needs R, rpy2 (pip install 'spatialdomains[r]') and the R package clusterProfiler "
                  "(BiocManager::install('clusterProfiler'))")
        raise BackendUnavailable(f"engine='clusterProfiler' is not available: {reason}; engine='fallback' "
                                 "computes the same statistics")
    return "clusterProfiler" if available else "fallback"


@functools.lru_cache(maxsize=None)
def _r_package_installed(package: str) -> bool:
    try:
        result = subprocess.run(["Rscript", "--vanilla", "-e", f'cat(requireNamespace("{package}", quietly=TRUE))'],
                                capture_output=True, text=True, timeout=120)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.stdout.strip() == "TRUE"


def _gene_lists(gene_lists) -> dict[str, list[str]]:
    if isinstance(gene_lists, pd.DataFrame):
        required = {"domain", "gene", "significant", "log2fc"}
        missing = required - set(gene_lists.columns)
        if missing:
            raise InputError(f"the marker table lacks the columns {', '.join(sorted(missing))}: pass the table from "
                             "spatialdomains.analysis.markers() or a dict of domain -> genes")
        up = gene_lists[gene_lists["significant"] & (gene_lists["log2fc"] > 0)]
        domains = gene_lists["domain"].astype(str).unique()
        return {d: up.loc[up["domain"].astype(str) == d, "gene"].astype(str).tolist() for d in domains}
    if isinstance(gene_lists, Mapping):
        return {str(domain): [str(g) for g in genes] for domain, genes in gene_lists.items()}
    raise InputError("gene_lists must be a dict of domain -> genes or a marker table from markers()")


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    restored = np.empty_like(values)
    restored[order] = values
    return restored
