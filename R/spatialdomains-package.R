#' spatialdomains: spatial domains from spatial transcriptomics
#'
#' The R interface to the spatialdomains Python package (STAIG, Spotscape, SpaMI).
#' The models run in Python through reticulate; results come back into
#' SingleCellExperiment, SpatialExperiment and Seurat objects.
#'
#' @keywords internal
"_PACKAGE"
