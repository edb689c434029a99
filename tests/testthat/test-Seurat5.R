## Seurat v5 objects: Assay5 counts layers (split per sample), and Visium HD
## objects that hold one assay per bin size, each with its own spots and image.

skip_without_seurat5 <- function() {
    skip_if_not_installed("SeuratObject")
    if (utils::packageVersion("SeuratObject") < "5.0.0") {
        skip(paste0("needs SeuratObject >= 5 (Assay5 layers); this library has ",
                    utils::packageVersion("SeuratObject"), " (Debian ships 4.1)"))
    }
}

simulated_counts <- function(n_spots, seed, prefix = "") {
    sce <- simulateVisium(n_spots = n_spots, n_domains = 3, seed = seed)
    counts <- methods::as(SummarizedExperiment::assay(sce, "counts"), "CsparseMatrix")
    colnames(counts) <- paste0(prefix, colnames(counts))
    xy <- SingleCellExperiment::reducedDim(sce, "spatial")
    list(counts = counts, x = xy[, 1], y = xy[, 2], truth = sce$ground_truth)
}

test_that("split counts layers of a Seurat v5 assay are read as one matrix in the assay's spot order", {
    skip_without_spatialdomains()
    skip_without_seurat5()
    data <- simulated_counts(300, 4)
    joined <- SeuratObject::CreateSeuratObject(SeuratObject::CreateAssay5Object(counts = data$counts))
    joined$px <- data$x
    joined$py <- data$y
    split <- joined
    split[["RNA"]] <- split(split[["RNA"]], f = rep(c("A", "B", "C"), length.out = ncol(split)))
    expect_identical(SeuratObject::Layers(split[["RNA"]]), c("counts.A", "counts.B", "counts.C"))

    joined <- runSTAIG(joined, spatial_coords = c("px", "py"), n_epochs = 5, seed = 1)
    split <- runSTAIG(split, spatial_coords = c("px", "py"), n_epochs = 5, seed = 1)
    expect_equal(SeuratObject::Embeddings(split, "staig"), SeuratObject::Embeddings(joined, "staig"))
    expect_identical(rownames(SeuratObject::Embeddings(split, "staig")), colnames(split))
})

test_that("an assay without counts names its layers and the fix", {
    skip_without_spatialdomains()
    skip_without_seurat5()
    data <- simulated_counts(200, 4)
    # SeuratObject itself warns that the new assay has no counts: that is the case tested here
    so <- suppressWarnings(SeuratObject::CreateSeuratObject(SeuratObject::CreateAssay5Object(data = log1p(data$counts))))
    expect_error(runSTAIG(so, n_epochs = 2), "has no counts layer \\(layers: data\\)")
})

test_that("a Visium HD object: the chosen bin size's spots, positions and image, NA for the other bins", {
    skip_without_spatialdomains()
    skip_without_seurat5()
    bins <- list(`008um` = simulated_counts(400, 5, "s_008um_"), `016um` = simulated_counts(150, 6, "s_016um_"))
    objects <- lapply(names(bins), function(size) {
        assay <- paste0("Spatial.", size)
        data <- bins[[size]]
        so <- SeuratObject::CreateSeuratObject(SeuratObject::CreateAssay5Object(counts = data$counts), assay = assay)
        so[[paste0("slice1.", size)]] <- SeuratObject::CreateFOV(
            data.frame(x = data$x, y = data$y, cell = colnames(data$counts)), type = "centroids", assay = assay)
        so$truth <- data$truth
        so
    })
    hd <- merge(objects[[1]], objects[[2]])
    expect_identical(ncol(hd), ncol(objects[[1]]) + ncol(objects[[2]]))

    hd <- findDomains(hd, assay = "Spatial.016um", n_domains = 3, n_epochs = 30, seed = 1)
    embedding <- SeuratObject::Embeddings(hd, "staig")
    expect_identical(rownames(embedding), colnames(bins$`016um`$counts))
    in_16 <- colnames(hd) %in% rownames(embedding)
    expect_true(all(is.na(hd$domain[!in_16])))
    expect_false(anyNA(hd$domain[in_16]))
    expect_gt(mclust::adjustedRandIndex(hd$domain[in_16], hd$truth[in_16]), 0.3)
})
