# Builds python/spatialdomains/data/simulator_genes.tsv: the real human gene symbols the simulator uses.
# Each marker program is 30 genes annotated (with ancestor propagation, GOALL) to one specific GO biological
# process, disjoint across programs; background genes are protein-coding genes annotated to none of them.
# Run from the repository root:  Rscript tools/make_simulator_genes.R
suppressMessages({
  library(org.Hs.eg.db)
  library(GO.db)
  library(AnnotationDbi)
})
programs <- c("GO:0042552", "GO:0006958", "GO:0006096", "GO:0030199",
              "GO:0031424", "GO:0006695", "GO:0045214", "GO:0019731")
genes_per_program <- 30L
n_background <- 2000L
set.seed(20261121)

term_genes <- lapply(programs, function(go) {
  hits <- suppressMessages(AnnotationDbi::select(org.Hs.eg.db, keys = go, keytype = "GOALL",
                                                 columns = "SYMBOL"))
  sort(unique(hits$SYMBOL[hits$ONTOLOGYALL == "BP"]))
})
names(term_genes) <- programs
annotated_to <- table(unlist(term_genes))
rows <- list()
for (go in programs) {
  candidates <- setdiff(term_genes[[go]], names(annotated_to)[annotated_to > 1])
  stopifnot(length(candidates) >= genes_per_program)
  picked <- sort(sample(candidates, genes_per_program))
  rows[[go]] <- data.frame(symbol = picked, program = go, term = unname(Term(go)))
}
types <- suppressMessages(AnnotationDbi::select(org.Hs.eg.db, keys = keys(org.Hs.eg.db),
                                                keytype = "ENTREZID", columns = c("SYMBOL", "GENETYPE")))
coding <- unique(types$SYMBOL[types$GENETYPE == "protein-coding"])
coding <- setdiff(coding, unlist(term_genes))
coding <- coding[grepl("^[A-Za-z0-9.-]+$", coding)]  # Seurat rewrites names with other characters
background <- sort(sample(coding, n_background))
rows[["background"]] <- data.frame(symbol = background, program = "background", term = "")
out <- do.call(rbind, rows)
write.table(out, "python/spatialdomains/data/simulator_genes.tsv", sep = "\t", quote = FALSE,
            row.names = FALSE)
cat(sprintf("%d genes written (org.Hs.eg.db %s)\n", nrow(out), packageVersion("org.Hs.eg.db")))
