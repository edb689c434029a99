two_slices <- function(class = "SingleCellExperiment") {
    a <- simulateVisium(n_spots = 250, n_domains = 3, seed = 1, class = class)
    b <- simulateVisium(n_spots = 220, n_domains = 3, seed = 2, class = class)
    if (class == "Seurat") {
        return(merge(a, b, add.cell.ids = c("A", "B")))
    }
    colnames(a) <- paste0("A_", colnames(a))
    colnames(b) <- paste0("B_", colnames(b))
    a$sample_id <- "A"
    b$sample_id <- "B"
    SummarizedExperiment::cbind(a, b)
}

test_that("clusterEmbedding refines within each slice", {
    set.seed(1)
    coordinates <- rbind(as.matrix(expand.grid(1:10, 1:10)), as.matrix(expand.grid(1:10, 1:10)))
    slices <- rep(c("A", "B"), each = 100)
    embedding <- cbind(ifelse(slices == "A", 0, 10) + rnorm(200, sd = 0.01), rnorm(200, sd = 0.01))
    fit <- clusterEmbedding(embedding, 2, coordinates = coordinates, refine = TRUE, method = "kmeans",
                            slices = slices)
    expect_identical(sum(table(slices, fit$domain) > 0), 2L)  # each slice one domain, untouched by the other
    expect_error(clusterEmbedding(embedding, 2, slices = slices[-1]), "a slice for every row")
})

test_that("findDomains integrates the slices named by sample_id and refines within each", {
    skip_without_spatialdomains()
    sce <- two_slices()
    before <- sce
    sce <- findDomains(sce, method = "spotscape", n_domains = 3, n_epochs = 3, seed = 1, cluster_method = "kmeans",
                       refine = TRUE)
    expect_identical(dim(SingleCellExperiment::reducedDim(sce, "Spotscape")), c(ncol(before), 64L))
    expect_identical(SummarizedExperiment::assays(sce), SummarizedExperiment::assays(before))
    record <- S4Vectors::metadata(sce)$spatialdomains$Spotscape
    expect_identical(unlist(record$slices), c("A", "B"))
    expect_identical(record$training$n_slices, 2L)
    coordinates <- SingleCellExperiment::reducedDim(sce, "spatial")
    expected <- sce$domain_unrefined
    for (slice in c("A", "B")) {
        rows <- sce$sample_id == slice
        expected[rows] <- refineDomains(sce$domain_unrefined[rows], coordinates[rows, ])
    }
    expect_identical(as.character(sce$domain), as.character(expected))

    one <- runSTAIG(before, n_epochs = 2, sample_id = NULL)
    expect_null(S4Vectors::metadata(one)$spatialdomains$STAIG$slices)
    expect_error(runSTAIG(before, n_epochs = 2, sample_id = "section"), "sample_id: no column 'section'")
})

test_that("a SpatialExperiment with several samples is integrated", {
    skip_without_spatialdomains()
    skip_if_not_installed("SpatialExperiment")
    spe <- two_slices("SpatialExperiment")
    spe <- runSTAIG(spe, n_epochs = 2, seed = 1)
    expect_identical(unlist(S4Vectors::metadata(spe)$spatialdomains$STAIG$slices), c("A", "B"))
})

test_that("a merged Seurat object with one image per slice is integrated", {
    skip_without_spatialdomains()
    skip_if_not_installed("Seurat")
    so <- two_slices("Seurat")
    expect_length(SeuratObject::Images(so), 2L)
    so <- findDomains(so, method = "staig", n_domains = 3, n_epochs = 2, seed = 1, cluster_method = "kmeans")
    record <- SeuratObject::Misc(so, "spatialdomains")$staig
    expect_identical(unlist(record$slices), SeuratObject::Images(so))
    expect_identical(dim(SeuratObject::Embeddings(so, "staig")), c(ncol(so), 64L))
})

test_that("findDomains: the model's seed drives the clustering, and Spotscape's chosen K is the domains' K", {
    skip_without_spatialdomains()
    sce <- findDomains(two_slices(), method = "spotscape", n_domains = NULL, n_epochs = 3, warmup_epochs = 1L,
                       seed = 5L, cluster_method = "kmeans", refine = FALSE)
    records <- S4Vectors::metadata(sce)$spatialdomains
    expect_identical(records$domain$seed, 5L)
    chosen <- as.integer(records$Spotscape$training$prototype_choice$n_domains)
    expect_identical(as.integer(records$domain$n_domains), chosen)
    expect_identical(nlevels(droplevels(sce$domain)), chosen)
    again <- findDomains(two_slices(), method = "spotscape", n_domains = 3, n_epochs = 2, seed = 5L,
                         cluster_method = "kmeans", cluster_seed = 11L)
    expect_identical(S4Vectors::metadata(again)$spatialdomains$domain$seed, 11L)
})
