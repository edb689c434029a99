## STAIG with the tissue image, from each container's own image slots.
small_image <- list(input_px = 32L, patch_px = 64L, backbone = "resnet18", batch_size = 16L)

test_that("runSTAIG(use_image = TRUE) uses a Seurat object's Visium image", {
    skip_if_not_installed("Seurat")
    skip_without_spatialdomains()
    x <- simulateVisium(n_spots = 150, n_domains = 3, seed = 2, class = "Seurat")
    x <- suppressWarnings(runSTAIG(x, use_image = TRUE, image_options = small_image, n_epochs = 2L, seed = 1))
    record <- SeuratObject::Misc(x, "spatialdomains")$staig
    expect_identical(record$image_key, "X_image")
    expect_identical(record$parameters$edge_drop, "image")
    expect_true(record$training$debiased)
    expect_identical(record$image_features$settings$backbone, "resnet18")
    # The simulated image is stored with the hires factor under 'lowres': patches of 3.5 fiducial diameters.
    expect_equal(record$image_features$patch_sides_px, round(3.5 * 105.5 * 0.25))
    expect_identical(dim(SeuratObject::Embeddings(x, "staig")), c(ncol(x), 64L))
})

test_that("an object without an image runs from gene expression and says so", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 150, n_domains = 3, seed = 2)
    expect_message(sce <- runSTAIG(sce, use_image = TRUE, n_epochs = 2L, seed = 1), "no tissue image")
    record <- S4Vectors::metadata(sce)$spatialdomains$STAIG
    expect_null(record$image_key)
    expect_identical(record$parameters$edge_drop, "fixed")
    expect_error(runSTAIG(sce, use_image = TRUE, image_options = list("resnet18")), "named list")
})

test_that("a SpatialExperiment's imgData drives STAIG's image path", {
    skip_if_not_installed("SpatialExperiment")
    skip_without_spatialdomains()
    spe <- simulateVisium(n_spots = 150, n_domains = 3, seed = 2, class = "SpatialExperiment")
    before <- SpatialExperiment::imgData(spe)
    spe <- suppressWarnings(runSTAIG(spe, use_image = TRUE, image_options = small_image, n_epochs = 2L, seed = 1))
    record <- S4Vectors::metadata(spe)$spatialdomains$STAIG
    expect_identical(record$image_key, "X_image")
    expect_equal(record$image_features$image_scales, 0.25)
    expect_identical(SpatialExperiment::imgData(spe), before)
})
