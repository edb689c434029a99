#' Simulated Visium-like example data
#'
#' The package's built-in example: spots on a Visium-like hexagonal grid,
#' layered domains with curved boundaries, negative-binomial counts and, in
#' each domain, a marker program of real human genes sharing one Gene Ontology
#' biological-process term. Drawn by the Python package's simulator, so the
#' same seed gives the same data in R and Python.
#'
#' @param n_spots Approximate number of spots.
#' @param n_domains Number of domains (at most 8).
#' @param seed Seed of the simulation.
#' @param class The class to return: \code{"SingleCellExperiment"} (coordinates
#'   in \code{reducedDim(x, "spatial")}), \code{"SpatialExperiment"}
#'   (needs the SpatialExperiment package; with the synthetic tissue image) or \code{"Seurat"} (needs Seurat; a
#'   Visium image holds the positions).
#' @return An object of \code{class} with raw counts, the ground truth in
#'   \code{ground_truth}, the planted GO terms in \code{rowData} /
#'   the metadata, and spot coordinates in full-resolution pixels.
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' table(sce$ground_truth)
#' @export
simulateVisium <- function(n_spots = 3000L, n_domains = 5L, seed = 0L,
                           class = c("SingleCellExperiment", "SpatialExperiment", "Seurat")) {
    class <- match.arg(class)
    data <- .bridge()$simulate(.count_argument(n_spots, "n_spots"), .count_argument(n_domains, "n_domains"),
                               .count_argument(seed, "seed"), image = class != "SingleCellExperiment")
    counts <- methods::new("dgCMatrix", i = as.integer(data$counts$i), p = as.integer(data$counts$p),
                           x = as.numeric(data$counts$x), Dim = as.integer(data$counts$dim),
                           Dimnames = list(unlist(data$gene_names), unlist(data$spot_names)))
    coordinates <- data$coordinates
    dimnames(coordinates) <- list(colnames(counts), c("x", "y"))
    annotations <- as.data.frame(lapply(data$obs, unlist), row.names = colnames(counts))
    annotations$ground_truth <- factor(annotations$ground_truth, levels = unlist(data$simulation$domains))
    genes <- S4Vectors::DataFrame(lapply(data$var, unlist), row.names = rownames(counts))
    switch(class,
        SingleCellExperiment = SingleCellExperiment::SingleCellExperiment(
            assays = list(counts = counts), colData = S4Vectors::DataFrame(annotations), rowData = genes,
            reducedDims = list(spatial = coordinates),
            metadata = list(simulation = data$simulation, scalefactors = data$scalefactors)),
        SpatialExperiment = .simulated_spe(counts, annotations, genes, coordinates, data),
        Seurat = .simulated_seurat(counts, annotations, coordinates, data))
}

.simulated_spe <- function(counts, annotations, genes, coordinates, data) {
    if (!requireNamespace("SpatialExperiment", quietly = TRUE)) {
        stop("class = 'SpatialExperiment' needs the SpatialExperiment package: ",
             "BiocManager::install('SpatialExperiment')", call. = FALSE)
    }
    colnames(coordinates) <- c("pxl_col_in_fullres", "pxl_row_in_fullres")
    image <- SpatialExperiment::SpatialImage(grDevices::as.raster(data$image))
    images <- S4Vectors::DataFrame(sample_id = "simulated", image_id = "hires", data = I(list(image)),
                                   scaleFactor = data$scalefactors$tissue_hires_scalef)
    SpatialExperiment::SpatialExperiment(
        assays = list(counts = counts), colData = S4Vectors::DataFrame(annotations), rowData = genes,
        sample_id = "simulated", spatialCoords = coordinates, imgData = images,
        metadata = list(simulation = data$simulation, scalefactors = data$scalefactors))
}

.simulated_seurat <- function(counts, annotations, coordinates, data) {
    if (!requireNamespace("Seurat", quietly = TRUE)) {
        stop("class = 'Seurat' needs the Seurat package: install.packages('Seurat')", call. = FALSE)
    }
    object <- SeuratObject::CreateSeuratObject(counts = counts, assay = "Spatial", meta.data = annotations)
    factors <- data$scalefactors
    positions <- data.frame(tissue = 1L, row = annotations$array_row, col = annotations$array_col,
                            imagerow = coordinates[, "y"], imagecol = coordinates[, "x"],
                            row.names = colnames(counts))
    # The simulated image is drawn at the hires scale; Seurat draws its image with the 'lowres' factor.
    image <- methods::new("VisiumV1", image = data$image,
                          scale.factors = Seurat::scalefactors(spot = factors$spot_diameter_fullres,
                                                               fiducial = factors$fiducial_diameter_fullres,
                                                               hires = factors$tissue_hires_scalef,
                                                               lowres = factors$tissue_hires_scalef),
                          coordinates = positions, spot.radius = factors$spot_diameter_fullres *
                              factors$tissue_hires_scalef / max(dim(data$image)[1:2]),
                          assay = "Spatial", key = "simulated_")
    object[["simulated"]] <- image
    SeuratObject::Misc(object, "simulation") <- data$simulation
    object
}

#' Simulated paired spatial omics
#'
#' The package's built-in paired-omics example: RNA plus protein
#' (\code{second = "adt"}) or chromatin accessibility (\code{"atac"}) on the
#' same spots of a hexagonal grid with layered domains. Neither modality
#' separates every domain on its own (RNA tells the domain pairs apart, the
#' second modality even from odd domains), so a method must use both. Drawn
#' by the Python package's simulator.
#'
#' @param n_spots Approximate number of spots.
#' @param n_domains Number of domains (2 to 12).
#' @param second The second modality: \code{"adt"} or \code{"atac"}.
#' @param seed Seed of the simulation.
#' @param class \code{"SingleCellExperiment"} (main experiment \code{"rna"},
#'   the second modality as \code{altExp(x, second)}, coordinates in
#'   \code{reducedDim(x, "spatial")}) or \code{"Seurat"} (assays \code{RNA}
#'   and \code{toupper(second)}, coordinates in the meta.data columns
#'   \code{x} and \code{y}: pass \code{spatial_coords = c("x", "y")}).
#' @return An object of \code{class} with raw counts in both modalities and
#'   the truth in \code{ground_truth}.
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateMultiomics(n_spots = 300, n_domains = 3, seed = 1)
#' SingleCellExperiment::altExpNames(sce)
#' @export
simulateMultiomics <- function(n_spots = 1300L, n_domains = 5L, second = c("adt", "atac"), seed = 0L,
                               class = c("SingleCellExperiment", "Seurat")) {
    second <- match.arg(second)
    class <- match.arg(class)
    data <- .bridge()$simulate_multiomics(.count_argument(n_spots, "n_spots"),
                                          .count_argument(n_domains, "n_domains"), second,
                                          .count_argument(seed, "seed"))
    spots <- unlist(data$spot_names)
    counts <- lapply(data$modalities, function(piece) {
        methods::new("dgCMatrix", i = as.integer(piece$counts$i), p = as.integer(piece$counts$p),
                     x = as.numeric(piece$counts$x), Dim = as.integer(piece$counts$dim),
                     Dimnames = list(unlist(piece$feature_names), spots))
    })
    coordinates <- data$coordinates
    dimnames(coordinates) <- list(spots, c("x", "y"))
    truth <- factor(unlist(data$ground_truth), levels = unlist(data$domains))
    if (class == "Seurat") {
        if (!requireNamespace("SeuratObject", quietly = TRUE)) {
            stop("class = 'Seurat' needs the SeuratObject package: install.packages('SeuratObject')", call. = FALSE)
        }
        annotations <- data.frame(ground_truth = truth, x = coordinates[, "x"], y = coordinates[, "y"],
                                  row.names = spots)
        object <- SeuratObject::CreateSeuratObject(counts = counts$rna, assay = "RNA", meta.data = annotations)
        object[[toupper(second)]] <- SeuratObject::CreateAssayObject(counts = counts[[second]])
        return(object)
    }
    other <- SingleCellExperiment::SingleCellExperiment(assays = list(counts = counts[[second]]))
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = counts$rna), colData = S4Vectors::DataFrame(ground_truth = truth, row.names = spots),
        reducedDims = list(spatial = coordinates))
    SingleCellExperiment::mainExpName(sce) <- "rna"
    SingleCellExperiment::altExp(sce, second) <- other
    sce
}
