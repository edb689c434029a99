test_that("findDomains on a Seurat object adds a reduction and a meta.data column and keeps the rest", {
    skip_without_spatialdomains()
    skip_if_not_installed("Seurat")
    so <- simulateVisium(n_spots = 400, n_domains = 3, seed = 3, class = "Seurat")
    so$batch <- "a"
    so[["pca"]] <- SeuratObject::CreateDimReducObject(
        embeddings = matrix(rnorm(ncol(so) * 2), ncol = 2, dimnames = list(colnames(so), c("PC_1", "PC_2"))),
        key = "PC_", assay = "Spatial")
    before <- so

    after <- findDomains(so, n_domains = 3, n_epochs = 30, seed = 1, library_size = "total_counts")

    expect_identical(SeuratObject::GetAssayData(after, slot = "counts"),
                     SeuratObject::GetAssayData(before, slot = "counts"))
    expect_identical(after[[]][, names(before[[]])], before[[]])
    expect_identical(SeuratObject::Embeddings(after, "pca"), SeuratObject::Embeddings(before, "pca"))
    expect_identical(after[["simulated"]], before[["simulated"]])
    expect_identical(SeuratObject::Misc(after, "simulation"), SeuratObject::Misc(before, "simulation"))

    embedding <- SeuratObject::Embeddings(after, "staig")
    expect_identical(dim(embedding), c(ncol(so), 64L))
    expect_identical(rownames(embedding), colnames(so))
    expect_s3_class(after$domain, "factor")
    expect_identical(levels(after$domain), c("1", "2", "3"))
    records <- SeuratObject::Misc(after, "spatialdomains")
    expect_identical(records$staig$random_state, 1L)
    expect_identical(records$domain$embedding, "staig")
    expect_gt(mclust::adjustedRandIndex(after$domain, after$ground_truth), 0.5)
})

test_that("Seurat and SingleCellExperiment give the same embedding and domains for the same data", {
    skip_without_spatialdomains()
    skip_if_not_installed("Seurat")
    so <- simulateVisium(n_spots = 300, n_domains = 3, seed = 5, class = "Seurat")
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 5)
    so <- findDomains(so, n_domains = 3, n_epochs = 10, seed = 2)
    sce <- findDomains(sce, n_domains = 3, n_epochs = 10, seed = 2)
    expect_equal(unname(SeuratObject::Embeddings(so, "staig")), unname(SingleCellExperiment::reducedDim(sce, "STAIG")))
    expect_identical(unname(so$domain), unname(sce$domain))
})

test_that("a Seurat object without an image needs spatial_coords", {
    skip_without_spatialdomains()
    skip_if_not_installed("Seurat")
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 5)
    counts <- SummarizedExperiment::assay(sce, "counts")
    so <- SeuratObject::CreateSeuratObject(counts, meta.data = as.data.frame(SummarizedExperiment::colData(sce)))
    expect_error(runSTAIG(so, n_epochs = 2), "no image with spot positions")
    xy <- SingleCellExperiment::reducedDim(sce, "spatial")
    so$px <- xy[, 1]
    so$py <- xy[, 2]
    so <- runSTAIG(so, spatial_coords = c("px", "py"), n_epochs = 5, seed = 1)
    expect_identical(dim(SeuratObject::Embeddings(so, "staig")), c(ncol(sce), 64L))
})

test_that("VisiumV2 images of Seurat 5.4 and of earlier Seurat 5 give the positions of the VisiumV1 image", {
    skip_without_spatialdomains()
    skip_if_not_installed("SeuratObject")
    so <- simulateVisium(n_spots = 200, n_domains = 3, seed = 3, class = "Seurat")
    name <- SeuratObject::Images(so)[1]
    v1 <- so[[name]]
    expected <- spatialdomains:::.seurat_coordinates(so, NULL)
    expect_gt(mean(expected[, 1] != expected[, 2]), 0.9)  # so a transposed map cannot pass
    for (current in c(TRUE, FALSE)) {
        v2 <- so
        v2@images[[name]] <- visium_v2_standin(v1, seurat_5_4 = current)
        expect_equal(unname(spatialdomains:::.seurat_coordinates(v2, NULL)), unname(expected),
                     info = if (current) "Seurat 5.4 (horizontal)" else "Seurat 5.0-5.3 (unmarked)")
        picture <- spatialdomains:::.seurat_images(v2)[[name]]
        expect_identical(dim(picture$array), dim(methods::slot(v1, "image")))
    }
})
