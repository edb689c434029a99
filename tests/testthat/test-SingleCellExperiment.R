test_that("findDomains on a SingleCellExperiment adds results and keeps everything else", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 3)
    SummarizedExperiment::assay(sce, "logcounts") <- log1p(SummarizedExperiment::assay(sce, "counts"))
    SingleCellExperiment::reducedDim(sce, "PCA") <- matrix(rnorm(ncol(sce) * 2), ncol = 2)
    sce$batch <- "a"
    S4Vectors::metadata(sce)$note <- "kept"
    SingleCellExperiment::altExp(sce, "spikes") <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = matrix(1, 2, ncol(sce), dimnames = list(c("s1", "s2"), colnames(sce)))))
    before <- sce

    after <- findDomains(sce, n_domains = 3, n_epochs = 30, seed = 1, library_size = "total_counts")

    expect_identical(SummarizedExperiment::assays(after), SummarizedExperiment::assays(before))
    expect_identical(SummarizedExperiment::rowData(after), SummarizedExperiment::rowData(before))
    expect_identical(SingleCellExperiment::altExps(after), SingleCellExperiment::altExps(before))
    for (name in SingleCellExperiment::reducedDimNames(before)) {
        expect_identical(SingleCellExperiment::reducedDim(after, name), SingleCellExperiment::reducedDim(before, name))
    }
    old_columns <- names(SummarizedExperiment::colData(before))
    expect_identical(SummarizedExperiment::colData(after)[, old_columns], SummarizedExperiment::colData(before))
    expect_identical(S4Vectors::metadata(after)$note, "kept")
    expect_identical(dimnames(after), dimnames(before))

    embedding <- SingleCellExperiment::reducedDim(after, "STAIG")
    expect_identical(dim(embedding), c(ncol(sce), 64L))
    expect_identical(rownames(embedding), colnames(sce))
    expect_true(all(is.finite(embedding)))
    expect_s3_class(after$domain, "factor")
    expect_identical(levels(after$domain), c("1", "2", "3"))
    expect_s3_class(after$domain_unrefined, "factor")  # a Visium-like lattice is refined
    records <- S4Vectors::metadata(after)$spatialdomains
    expect_identical(records$STAIG$random_state, 1L)
    expect_identical(records$STAIG$parameters$n_epochs, 30L)
    expect_true(nzchar(records$STAIG$versions$torch))
    expect_identical(records$domain$backend, "mclust")
    expect_identical(records$domain$embedding, "STAIG")
    # The simulator plants 3 domains; even a short training finds them.
    expect_gt(mclust::adjustedRandIndex(after$domain, after$ground_truth), 0.5)
})

test_that("runSTAIG is reproducible for a seed", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 4)
    first <- runSTAIG(sce, n_epochs = 10, seed = 7)
    second <- runSTAIG(sce, n_epochs = 10, seed = 7)
    expect_identical(SingleCellExperiment::reducedDim(first, "STAIG"), SingleCellExperiment::reducedDim(second, "STAIG"))
})

test_that("coordinates can come from colData columns, a reducedDim or a matrix", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 4)
    coordinates <- SingleCellExperiment::reducedDim(sce, "spatial")
    plain <- sce
    SingleCellExperiment::reducedDim(plain, "spatial") <- NULL
    expect_error(runSTAIG(plain, n_epochs = 2), "no spot coordinates found")
    plain$px <- coordinates[, 1]
    plain$py <- coordinates[, 2]
    by_columns <- runSTAIG(plain, spatial_coords = c("px", "py"), n_epochs = 5, seed = 1)
    by_matrix <- runSTAIG(plain, spatial_coords = coordinates, n_epochs = 5, seed = 1)
    expect_identical(SingleCellExperiment::reducedDim(by_columns, "STAIG"),
                     SingleCellExperiment::reducedDim(by_matrix, "STAIG"))
    expect_error(runSTAIG(plain, spatial_coords = c("px", "nope")), "'spatial_coords' must be")
    expect_error(runSTAIG(plain, spatial_coords = coordinates[1:10, ]), "has 10 rows for 304 spots")
})

test_that("dense counts work and bad inputs get messages naming the fix", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 4)
    dense <- sce
    SummarizedExperiment::assay(dense, "counts") <- as.matrix(SummarizedExperiment::assay(sce, "counts"))
    expect_identical(SingleCellExperiment::reducedDim(runSTAIG(dense, n_epochs = 5, seed = 1), "STAIG"),
                     SingleCellExperiment::reducedDim(runSTAIG(sce, n_epochs = 5, seed = 1), "STAIG"))
    expect_error(runSTAIG(sce, assay.type = "nope"), "nope")
    unnamed <- sce
    rownames(unnamed) <- NULL
    expect_error(runSTAIG(unnamed), "set rownames")
    negative <- sce
    SummarizedExperiment::assay(negative, "counts")[1, 1] <- -1
    expect_error(runSTAIG(negative, n_epochs = 2), "negative")
    expect_error(runSTAIG(sce, n_epochs = 0), "n_epochs = 0 \\(must be at least 1\\)")  # R's words, not Python's
    unassigned <- sce
    unassigned$sample_id <- rep(c("A", NA), length.out = ncol(sce))
    expect_error(runSTAIG(unassigned, n_epochs = 2), "spots have no slice in column 'sample_id'")
    expect_error(clusterDomains(sce, dimred = "nope"), "reducedDim 'nope' does not exist")
    expect_error(runSTAIG(list()), "must be a SingleCellExperiment, SpatialExperiment or Seurat")
})

test_that("progress = TRUE reports each step and the training as R messages", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 4)
    shown <- capture.output(out <- runSTAIG(sce, n_epochs = 10, seed = 1, progress = TRUE,
                                            library_size = "total_counts"), type = "message")
    expect_true(any(grepl("^spatialdomains: STAIG: training on 304 spots in full batch, on cpu with 1 CPU thread",
                          shown)))
    expect_identical(sum(grepl("^STAIG: [0-9]+/10 epochs, loss", shown)), 10L)
    expect_true(any(grepl("^spatialdomains: STAIG: 10 epochs in", shown)))
    expect_silent(suppressMessages(runSTAIG(sce, n_epochs = 2, seed = 1, progress = TRUE,
                                            library_size = "total_counts")))
    expect_length(capture.output(quiet <- runSTAIG(sce, n_epochs = 2, seed = 1, progress = FALSE,
                                                   library_size = "total_counts"), type = "message"), 0L)
    expect_true(all(c("preprocess", "graph", "train") %in% names(S4Vectors::metadata(out)$spatialdomains$STAIG$timings)))
})

test_that("the large-data mode can be asked for from R, and the record says it ran", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 4)
    out <- runSTAIG(sce, n_epochs = 2, seed = 1, training = "minibatch", batch_size = 100,
                    library_size = "total_counts")
    training <- S4Vectors::metadata(out)$spatialdomains$STAIG$training
    expect_identical(training$mode, "minibatch")
    expect_identical(as.integer(training$batch_size), 100L)
    expect_error(runSTAIG(sce, training = "fast"), 'training = "fast": choose one of auto, full, minibatch')
    expect_error(runSTAIG(sce, batch_size = 0), "batch_size = 0: give a whole number of at least 1")
})

test_that("counts held as a DelayedMatrix (as HDF5-backed importers give them) give the same embedding", {
    skip_without_spatialdomains()
    skip_if_not_installed("DelayedArray")
    sce <- simulateVisium(n_spots = 250, n_domains = 3, seed = 8)
    delayed <- sce
    SummarizedExperiment::assay(delayed, "counts", withDimnames = FALSE) <-
        DelayedArray::DelayedArray(SummarizedExperiment::assay(sce, "counts"))
    expect_s4_class(SummarizedExperiment::assay(delayed, "counts"), "DelayedMatrix")
    sce <- runSTAIG(sce, n_epochs = 3, seed = 1)
    delayed <- runSTAIG(delayed, n_epochs = 3, seed = 1)
    expect_identical(SingleCellExperiment::reducedDim(delayed, "STAIG"), SingleCellExperiment::reducedDim(sce, "STAIG"))
})
