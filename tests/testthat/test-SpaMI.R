test_that("runSpaMI puts the fused and per-omics embeddings and the attention into an SCE", {
    skip_without_spatialdomains()
    sce <- simulateMultiomics(n_spots = 300, n_domains = 3, seed = 2)
    expect_identical(SingleCellExperiment::altExpNames(sce), "adt")
    before <- sce
    sce <- runSpaMI(sce, n_epochs = 20, seed = 1)
    for (name in c("SpaMI", "SpaMI_rna", "SpaMI_adt")) {
        expect_identical(dim(SingleCellExperiment::reducedDim(sce, name)), c(ncol(before), 64L))
    }
    attention <- cbind(sce$SpaMI_attention_rna, sce$SpaMI_attention_adt)
    expect_true(all(attention > 0))
    expect_equal(rowSums(attention), rep(1, ncol(sce)), tolerance = 1e-5)
    # Nothing that was there changes: assays, the altExp, colData, the coordinates.
    expect_identical(SummarizedExperiment::assays(sce), SummarizedExperiment::assays(before))
    expect_identical(SingleCellExperiment::altExp(sce, "adt"), SingleCellExperiment::altExp(before, "adt"))
    expect_identical(sce$ground_truth, before$ground_truth)
    expect_identical(SingleCellExperiment::reducedDim(sce, "spatial"),
                     SingleCellExperiment::reducedDim(before, "spatial"))
    record <- S4Vectors::metadata(sce)$spatialdomains$SpaMI
    expect_identical(unlist(record$modalities), c("rna", "adt"))
    expect_identical(record$training$epochs_run, 20L)
    # Same seed, same embedding; the second modality can be named explicitly.
    again <- runSpaMI(before, altexp = "adt", n_epochs = 20, seed = 1)
    expect_identical(SingleCellExperiment::reducedDim(again, "SpaMI"), SingleCellExperiment::reducedDim(sce, "SpaMI"))
})

test_that("findDomains(method = 'spami') finds the domains, and errors name the fix", {
    skip_without_spatialdomains()
    sce <- simulateMultiomics(n_spots = 500, n_domains = 4, seed = 1)
    sce <- findDomains(sce, method = "spami", n_domains = 4, n_epochs = 200, seed = 0)
    expect_s3_class(sce$domain, "factor")
    expect_null(sce$domain_unrefined)  # not refined: SpaMI's protocol
    expect_gt(mclust::adjustedRandIndex(sce$domain, sce$ground_truth), 0.5)
    expect_identical(S4Vectors::metadata(sce)$spatialdomains$domain$embedding, "SpaMI")

    expect_error(runSpaMI(sce, altexp = "protein"), "altExp 'protein' does not exist")
    renamed <- sce
    SingleCellExperiment::altExpNames(renamed) <- "antibodies"
    expect_error(runSpaMI(renamed, n_epochs = 2), "cannot tell what modality 'antibodies' holds")
    fixed <- runSpaMI(renamed, kinds = c(antibodies = "adt"), n_epochs = 2)
    expect_true("SpaMI_antibodies" %in% SingleCellExperiment::reducedDimNames(fixed))
})

test_that("runSpaMI reads a Seurat object's two assays", {
    skip_without_spatialdomains()
    skip_if_not_installed("SeuratObject")
    so <- simulateMultiomics(n_spots = 300, n_domains = 3, seed = 2, class = "Seurat")
    so <- runSpaMI(so, spatial_coords = c("x", "y"), n_epochs = 20, seed = 1)
    expect_true(all(c("spami", "spami_rna", "spami_adt") %in% SeuratObject::Reductions(so)))
    sce <- runSpaMI(simulateMultiomics(n_spots = 300, n_domains = 3, seed = 2), n_epochs = 20, seed = 1)
    expect_equal(unname(SeuratObject::Embeddings(so, "spami")), unname(SingleCellExperiment::reducedDim(sce, "SpaMI")))
    expect_equal(so$spami_attention_RNA, sce$SpaMI_attention_rna, ignore_attr = TRUE)
})
