test_that("a SpatialExperiment gives its spatialCoords, keeps its images and slots", {
    skip_if_not_installed("SpatialExperiment")
    skip_without_spatialdomains()
    spe <- simulateVisium(n_spots = 400, n_domains = 3, seed = 3, class = "SpatialExperiment")
    before <- spe
    after <- findDomains(spe, n_domains = 3, n_epochs = 30, seed = 1, library_size = "total_counts")
    expect_identical(SpatialExperiment::spatialCoords(after), SpatialExperiment::spatialCoords(before))
    expect_identical(nrow(SpatialExperiment::imgData(before)), 1L)
    expect_identical(SpatialExperiment::imgData(after), SpatialExperiment::imgData(before))
    expect_identical(SummarizedExperiment::assays(after), SummarizedExperiment::assays(before))
    expect_identical(SummarizedExperiment::colData(after)[, names(SummarizedExperiment::colData(before))],
                     SummarizedExperiment::colData(before))
    expect_s3_class(after$domain, "factor")
    expect_gt(mclust::adjustedRandIndex(after$domain, after$ground_truth), 0.5)
    # The same data as a plain SCE give the same embedding.
    sce <- findDomains(simulateVisium(n_spots = 400, n_domains = 3, seed = 3), n_domains = 3, n_epochs = 30,
                       seed = 1, library_size = "total_counts")
    expect_identical(unname(SingleCellExperiment::reducedDim(after, "STAIG")),
                     unname(SingleCellExperiment::reducedDim(sce, "STAIG")))
})
