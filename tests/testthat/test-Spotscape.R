test_that("runSpotscape and findDomains(method = 'spotscape') fill SCE and Seurat objects", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 6)
    before <- sce
    sce <- findDomains(sce, method = "spotscape", n_domains = 3, n_epochs = 10, seed = 1)  # k-means, its own
    embedding <- SingleCellExperiment::reducedDim(sce, "Spotscape")
    expect_identical(dim(embedding), c(ncol(before), 64L))
    expect_true(all(embedding >= 0))  # the encoder ends in a ReLU
    expect_identical(SummarizedExperiment::assays(sce), SummarizedExperiment::assays(before))
    expect_s3_class(sce$domain, "factor")
    records <- S4Vectors::metadata(sce)$spatialdomains
    expect_identical(records$Spotscape$parameters$n_epochs, 10L)
    expect_identical(records$domain$embedding, "Spotscape")
    expect_identical(records$domain$backend, "kmeans")
    expect_error(runSpotscape(sce, library_size = "total_counts", n_epochs = 2), "library_size does not apply to spotscape")

    skip_if_not_installed("Seurat")
    so <- simulateVisium(n_spots = 300, n_domains = 3, seed = 6, class = "Seurat")
    so <- runSpotscape(so, n_epochs = 10, seed = 1)
    expect_equal(unname(SeuratObject::Embeddings(so, "spotscape")), unname(embedding))
})
