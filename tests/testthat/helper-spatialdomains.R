## Tests that train a model need Python with the spatialdomains package. They
## skip, naming it, when it is missing; CI sets SPATIALDOMAINS_REQUIRE_PYTHON so
## that a missing Python fails instead of skipping.
skip_without_spatialdomains <- function() {
    if (spatialdomainsAvailable()) {
        return(invisible(TRUE))
    }
    if (nzchar(Sys.getenv("SPATIALDOMAINS_REQUIRE_PYTHON"))) {
        stop("SPATIALDOMAINS_REQUIRE_PYTHON is set, but no Python with the spatialdomains package was found ",
             "(set RETICULATE_PYTHON)")
    }
    skip("needs Python with the spatialdomains package (set RETICULATE_PYTHON or options(spatialdomains.python))")
}

## The shared real datasets: $SPATIALDOMAINS_SHARED, else ../shared next to the repository.
shared_file <- function(...) {
    root <- Sys.getenv("SPATIALDOMAINS_SHARED", testthat::test_path("..", "..", "..", "shared"))
    path <- file.path(root, ...)
    if (!file.exists(path)) {
        skip(paste("needs the shared dataset", file.path(...), "(set SPATIALDOMAINS_SHARED)"))
    }
    path
}

## Runs Python code in a separate process (the Python that reticulate uses), as
## Python-side mclust starts R through rpy2, which must not happen inside R.
run_python <- function(code, ...) {
    python <- reticulate::py_config()$python
    script <- tempfile(fileext = ".py")
    writeLines(code, script)
    # R's LD_LIBRARY_PATH can point a Python at another build's libpython: run it with the library path unset.
    output <- suppressWarnings(system2(python, c(script, ...), stdout = TRUE, stderr = TRUE,
                                       env = c("LD_LIBRARY_PATH=", "PYTHONPATH=")))
    status <- attr(output, "status")
    if (!is.null(status) && status != 0) {
        stop("Python failed:\n", paste(output, collapse = "\n"))
    }
    output
}

## A small simulated sample with a trained STAIG embedding, shared by tests.
small_sample <- local({
    cached <- NULL
    function() {
        if (is.null(cached)) {
            sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 3)
            cached <<- runSTAIG(sce, n_epochs = 40, seed = 0, library_size = "total_counts")
        }
        cached
    }
})

## A Seurat 5 VisiumV2 image for SeuratObject 4, which has no such class: Seurat's own builder, field for field
## (Seurat 5.4: an FOV of centroids from (imagecol, imagerow), marked coords_x_orientation = "horizontal"; Seurat
## 5.0-5.3: from (imagerow, imagecol), unmarked). SeuratObject 4's FOV cannot be extended through new(), so the
## stand-in takes the FOV and adds VisiumV2's slots; it is placed with object@images (`[[<-` validates by
## coercing to FOV, which SeuratObject 4 cannot do either).
visium_v2_standin <- function(visium_v1, seurat_5_4 = TRUE) {
    if (!methods::isClass("VisiumV2")) {
        methods::setClass("VisiumV2", contains = "FOV", where = globalenv(),
                          slots = c(image = "array", scale.factors = "ANY", coords_x_orientation = "character"))
    }
    coordinates <- methods::slot(visium_v1, "coordinates")
    columns <- if (seurat_5_4) c("imagecol", "imagerow") else c("imagerow", "imagecol")
    fov <- SeuratObject::CreateFOV(coordinates[, columns], type = "centroids",
                                   radius = methods::slot(visium_v1, "scale.factors")[["spot"]],
                                   assay = methods::slot(visium_v1, "assay"), key = methods::slot(visium_v1, "key"))
    image <- fov
    class(image) <- structure("VisiumV2", package = ".GlobalEnv")
    attr(image, "image") <- methods::slot(visium_v1, "image")
    attr(image, "scale.factors") <- methods::slot(visium_v1, "scale.factors")
    attr(image, "coords_x_orientation") <- if (seurat_5_4) "horizontal" else character(0)
    image
}
