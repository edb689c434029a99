"""Comparing conditions after integration: per domain, the genes that differ between conditions, and how the
domains' shares of the tissue differ.

With replicates (at least two slices of each condition holding the domain) the test is on pseudobulks: the
counts of each slice's spots in the domain summed, then DESeq2's negative-binomial Wald test (PyDESeq2) with the
slices as replicates, so spots of one slice are not counted as independent. Without, it is
Wilcoxon's rank-sum test on the spots' log-normalised values (scanpy's ``rank_genes_groups``), which treats spots as
independent and so overstates significance; the table says which test ran for each domain.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._record import record_step
from ..errors import InputError, option

logger = logging.getLogger("spatialdomains")

@dataclass
class ConditionComparison:
    """``genes``: one row per domain, compared condition and gene (log2 fold change against the reference,
    p-value, Benjamini–Hochberg adjusted within each domain and comparison, the test used, replicates and
    spots on each side). ``composition``: each domain's mean share of the spots per condition and the p-value of
    the difference; ``shares``: each slice's share of every domain."""

    genes: pd.DataFrame
    composition: pd.DataFrame
    shares: pd.DataFrame


def compare_conditions(adata: ad.AnnData, condition_key: str, *, domain_key: str = "domain",
                       sample_key: str = "slice", reference: str | None = None, layer: str | None = None,
                       min_spots: int = 10) -> ConditionComparison:
    """Per domain, compare each condition with a reference condition: genes and domain shares.

    Counts are raw. Domains with fewer than ``min_spots`` spots on either side are left out (the record names
    them), and so are spots without a condition, slice or domain.

    Parameters
    ----------
    adata : anndata.AnnData
        Raw counts in ``X`` (or ``layers[layer]``), with conditions, slices and domains in ``obs``.
    condition_key : str
        The ``obs`` column that holds each spot's condition.
    domain_key : str, optional
        The ``obs`` column that holds the domains.
    sample_key : str, optional
        The ``obs`` column that names the slices. Each slice has one condition.
    reference : str or None, optional
        The condition the others are compared with. None takes the first category, or the first value met.
    layer : str or None, optional
        The layer that holds the raw counts; None uses ``X``.
    min_spots : int, optional
        The fewest spots of a domain on each side for it to be tested.

    Returns
    -------
    ConditionComparison
        The gene table (``genes``), each domain's share per condition (``composition``) and each slice's
        share of every domain (``shares``). The run is recorded in
        ``uns['spatialdomains']['compare_conditions']``.
    """
    started = time.perf_counter()
    for key, what in ((condition_key, "condition_key"), (domain_key, "domain_key"), (sample_key, "sample_key")):
        if key not in adata.obs:
            raise InputError(f"{option(what, key)}: obs['{key}'] does not exist (obs columns: "
                             f"{', '.join(adata.obs)})")
    conditions, samples = _labels(adata.obs[condition_key]), _labels(adata.obs[sample_key])
    conditions = conditions.where(samples.notna(), None)  # a spot without a slice has no replicate to count in
    per_sample = conditions.groupby(samples, observed=True).nunique()
    if (per_sample > 1).any():
        mixed = ", ".join(per_sample.index[per_sample > 1][:5])
        raise InputError(f"slices {mixed} hold spots of several conditions in obs['{condition_key}']: each slice "
                         f"({option('sample_key', sample_key)}) must have one condition")
    given = adata.obs[condition_key]
    levels = ([str(c) for c in given.cat.categories if (given == c).any()]
              if isinstance(given.dtype, pd.CategoricalDtype) else list(pd.unique(conditions.dropna())))
    reference = levels[0] if reference is None else str(reference)
    if reference not in levels:
        raise InputError(f"{option('reference', reference)} is not a value of obs['{condition_key}'] (values: "
                         f"{', '.join(levels)})")
    if len(levels) < 2:
        raise InputError(f"obs['{condition_key}'] has one condition only ({reference}): nothing to compare")
    counts = sp.csr_matrix(adata.layers[layer] if layer else adata.X, dtype=np.float64)
    domains = adata.obs[domain_key]
    tables, skipped = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _compare_domains(counts, adata.var_names, domains, samples, conditions, levels, reference, min_spots,
                         tables, skipped)
    notes = sorted({str(warning.message) for warning in caught if "pydeseq2" in warning.filename})
    for text in notes:  # PyDESeq2's cautions (few replicates), once each rather than once per domain
        logger.warning("DESeq2: %s", text)
    for warning in caught:  # every other warning as it would have been
        if "pydeseq2" not in warning.filename:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    genes = (pd.concat(tables, ignore_index=True) if tables else
             pd.DataFrame(columns=["domain", "condition", "gene", "log2fc", "pvalue", "padj", "test"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)  # equal shares
        composition, shares = _composition(domains, samples, conditions, reference)
    record_step(adata, "compare_conditions", {
        "condition_key": condition_key, "domain_key": domain_key, "sample_key": sample_key, "reference": reference,
        "conditions": levels, "tests": sorted(set(genes["test"])) if len(genes) else [],
        "n_significant": int((genes["padj"] < 0.05).sum()) if len(genes) else 0,
        "domains_left_out": skipped, "min_spots": min_spots, "notes": notes,
        "timings": {"compare_conditions": time.perf_counter() - started},
    })
    return ConditionComparison(genes=genes, composition=composition, shares=shares)


def _compare_domains(counts, var_names, domains, samples, conditions, levels, reference, min_spots, tables,
                     skipped) -> None:
    """Each domain, each condition against the reference: one table per pair appended to ``tables``."""
    for condition in (level for level in levels if level != reference):
        for domain in pd.unique(domains.dropna()):
            in_domain = (domains == domain).to_numpy()
            ours = in_domain & (conditions == condition).to_numpy()
            theirs = in_domain & (conditions == reference).to_numpy()
            if ours.sum() < min_spots or theirs.sum() < min_spots:
                skipped.append(f"{domain} ({condition})")
                continue
            replicates = (samples[ours].nunique(), samples[theirs].nunique())
            if min(replicates) >= 2:
                table = _pseudobulk_test(counts, samples.to_numpy(), ours, theirs)
            else:
                table = _wilcoxon_test(counts, ours, theirs)
            table.insert(0, "gene", np.asarray(var_names)[table.pop("column").to_numpy()])
            table.insert(0, "condition", condition)
            table.insert(0, "domain", str(domain))
            table["n_slices"], table["n_slices_reference"] = replicates
            table["n_spots"], table["n_spots_reference"] = int(ours.sum()), int(theirs.sum())
            tables.append(table)


def _pseudobulk_test(counts: sp.csr_matrix, samples: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> pd.DataFrame:
    """DESeq2 (PyDESeq2) on per-slice sums of the domain's counts, test slices against reference slices; genes
    with at least 10 counts in all pseudobulks together."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    def bulks(rows: np.ndarray) -> np.ndarray:
        names = samples[rows]
        return np.vstack([np.asarray(counts[np.flatnonzero(rows)[names == name]].sum(axis=0)).ravel()
                          for name in pd.unique(names)])

    pooled = np.vstack([bulks(ours), bulks(theirs)])
    kept = np.flatnonzero(pooled.sum(axis=0) >= 10)
    groups = ["test"] * (pooled.shape[0] - bulks(theirs).shape[0]) + ["reference"] * bulks(theirs).shape[0]
    names = [f"bulk{i}" for i in range(pooled.shape[0])]
    inference = DefaultInference(n_cpus=1)
    design = pd.DataFrame({"condition": groups}, index=names)
    data = DeseqDataSet(counts=pd.DataFrame(np.rint(pooled[:, kept]).astype(np.int64), index=names,
                                            columns=[f"g{j}" for j in kept]),
                        metadata=design, design="~condition", inference=inference, quiet=True)
    data.deseq2()
    stats = DeseqStats(data, contrast=["condition", "test", "reference"], inference=inference, quiet=True)
    stats.summary()
    result = stats.results_df
    pvalues = result["pvalue"].fillna(1.0).to_numpy()
    return pd.DataFrame({"column": kept, "log2fc": result["log2FoldChange"].to_numpy(), "pvalue": pvalues,
                         "padj": _benjamini_hochberg(pvalues), "test": "pseudobulk (DESeq2 Wald, PyDESeq2)"})


def _wilcoxon_test(counts: sp.csr_matrix, ours: np.ndarray, theirs: np.ndarray) -> pd.DataFrame:
    """Wilcoxon rank-sum on log-normalised spots (scanpy), every gene detected in either group."""
    import scanpy as sc

    rows = np.flatnonzero(ours | theirs)
    work = ad.AnnData(sp.csr_matrix(counts[rows], dtype=np.float32))
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    work.obs["group"] = pd.Categorical(np.where(ours[rows], "test", "reference"))
    detected = np.flatnonzero(np.asarray((work.X > 0).sum(axis=0)).ravel() > 0)
    work = work[:, detected].copy()
    sc.tl.rank_genes_groups(work, "group", groups=["test"], reference="reference", method="wilcoxon")
    result = sc.get.rank_genes_groups_df(work, group="test")
    position = {name: i for i, name in enumerate(work.var_names)}
    return pd.DataFrame({"column": detected[[position[name] for name in result["names"]]],
                         "log2fc": result["logfoldchanges"].to_numpy(), "pvalue": result["pvals"].to_numpy(),
                         "padj": result["pvals_adj"].to_numpy(), "test": "wilcoxon (spots)"})


def _composition(domains: pd.Series, samples: pd.Series, conditions: pd.Series,
                 reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each domain's share of every slice; per condition the mean share and the p-value against the reference
    (Welch's t-test over slices with replicates, else a chi-square test on the spot counts)."""
    from scipy.stats import chi2_contingency, ttest_ind

    known = (domains.notna() & conditions.notna()).to_numpy()
    share = pd.crosstab(samples[known], domains[known].astype(str), normalize="index")
    condition_of = conditions.groupby(samples, observed=True).first()
    rows = []
    for condition in pd.unique(conditions.dropna()):
        if condition == reference:
            continue
        ours, theirs = share[condition_of[share.index] == condition], share[condition_of[share.index] == reference]
        for domain in share.columns:
            if min(len(ours), len(theirs)) >= 2:
                pvalue, test = ttest_ind(ours[domain], theirs[domain], equal_var=False).pvalue, "Welch t-test (slices)"
            else:
                in_ours = (conditions[known] == condition).to_numpy()
                in_theirs = (conditions[known] == reference).to_numpy()
                member = (domains[known].astype(str) == domain).to_numpy()
                table = [[(member & in_ours).sum(), (~member & in_ours).sum()],
                         [(member & in_theirs).sum(), (~member & in_theirs).sum()]]
                usable = min(map(sum, table)) > 0 and min(map(sum, zip(*table))) > 0
                pvalue, test = (chi2_contingency(table)[1] if usable else np.nan), "chi-square (spots)"
            rows.append({"domain": domain, "condition": condition, "share": float(ours[domain].mean()),
                         "share_reference": float(theirs[domain].mean()), "pvalue": float(pvalue), "test": test})
    per_slice = share.reset_index(names="slice")
    per_slice.insert(1, "condition", condition_of[per_slice["slice"]].to_numpy())
    return pd.DataFrame(rows), per_slice


def _labels(column: pd.Series) -> pd.Series:
    """A column as strings, missing values kept missing (not the text 'nan')."""
    return column.astype(object).where(column.notna(), None).map(lambda v: None if v is None else str(v))


def _benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    from scipy.stats import false_discovery_control

    return false_discovery_control(np.asarray(pvalues, dtype=np.float64)) if len(pvalues) else np.asarray(pvalues)
