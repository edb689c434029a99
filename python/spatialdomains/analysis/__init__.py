"""Downstream analysis of domains: marker genes (DEGs) and GO/gene-set enrichment.

``markers`` ranks genes per domain (Wilcoxon); ``enrich_go`` runs clusterProfiler's ``enrichGO`` when installed
and otherwise an exact re-implementation of it on Bioconductor's annotation databases or a GMT file.
"""
from .annotation import GeneSets, detect_key_type, detect_species, go_gene_sets, read_gmt
from .enrichment import enrich, enrich_go, p_adjust, significant, storey_qvalues
from .markers import markers, top_markers

__all__ = ["GeneSets", "detect_key_type", "detect_species", "enrich", "enrich_go", "go_gene_sets", "markers",
           "p_adjust", "read_gmt", "significant", "storey_qvalues", "top_markers"]
