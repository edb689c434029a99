"""clusterProfiler called through rpy2: ``enrichGO`` for GO, ``enricher`` for user gene sets.

Only used from a Python process (never from Python inside R, where starting rpy2 aborts R); the R package calls
clusterProfiler natively instead. All tested terms come back (cutoffs 1) so both engines are filtered alike.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .annotation import GeneSets

_R_ENRICH = """
function(genes, universe, ont, keytype, orgdb, term2gene, term2name, min_size, max_size, padj) {
  suppressPackageStartupMessages(library(clusterProfiler))
  u <- if (length(universe)) universe else NULL
  res <- if (is.null(term2gene)) {
    enrichGO(genes, OrgDb = orgdb, keyType = keytype, ont = ont, universe = u, pvalueCutoff = 1,
             qvalueCutoff = 1, minGSSize = min_size, maxGSSize = max_size, pAdjustMethod = padj)
  } else {
    enricher(genes, TERM2GENE = term2gene, TERM2NAME = term2name, universe = u, pvalueCutoff = 1,
             qvalueCutoff = 1, minGSSize = min_size, maxGSSize = max_size, pAdjustMethod = padj)
  }
  if (is.null(res)) return(NULL)
  out <- res@result
  out$qvalue <- as.numeric(out$qvalue)
  rownames(out) <- NULL
  out[, c("ID", "Description", "GeneRatio", "BgRatio", "pvalue", "p.adjust", "qvalue", "geneID", "Count")]
}
"""


def enrich(lists: Mapping[str, Sequence[str]], *, universe, ontology: str, key_type: str, org_package: str | None,
           gene_sets: GeneSets | None, min_size: int, max_size: int,
           p_adjust_method: str) -> tuple[dict[str, pd.DataFrame], str]:
    """Every tested term per domain, from clusterProfiler, and a description of the annotation used."""
    import rpy2.robjects as ro
    from rpy2.robjects import pandas2ri

    from .._utils import prefer_own_libpython

    prefer_own_libpython()  # R's start put the system's library folders first

    with (ro.default_converter + pandas2ri.converter).context():
        run = ro.r(_R_ENRICH)
        if gene_sets is None:
            ro.r(f'suppressPackageStartupMessages(library("{org_package}"))')
            org, term2gene, term2name = ro.r(org_package), ro.NULL, ro.NULL
            source = f"{org_package} via clusterProfiler::enrichGO ({ontology}, {key_type})"
        else:
            org = ro.NULL
            term2gene = gene_sets.pairs[["term", "gene"]]
            term2name = gene_sets.names.rename_axis("term").reset_index()
            source = f"{gene_sets.source} via clusterProfiler::enricher"
        tables = {}
        for domain, genes in lists.items():
            table = run(ro.StrVector(list(genes)), ro.StrVector(list(universe or [])), ontology, key_type or "",
                        org, term2gene, term2name, min_size, max_size, p_adjust_method)
            if isinstance(table, pd.DataFrame):  # R's NULL (nothing tested) leaves the domain out
                tables[domain] = table.reset_index(drop=True)
    return tables, source
