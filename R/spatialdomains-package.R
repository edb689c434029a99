#' spatialdomains: spatial domains from spatial transcriptomics
#'
#' The R interface to the spatialdomains Python package (STAIG, Spotscape,
#' SpaMI). The models run in Python through reticulate; results come back into
#' SingleCellExperiment, SpatialExperiment and Seurat objects, and clustering
#' into domains runs natively in R with mclust.
#'
#' Start with \code{\link{findDomains}}; see \code{\link{useSpatialdomainsPython}}
#' for choosing the Python, and \code{vignette("spatialdomains")}.
#'
#' @importFrom methods is setGeneric setMethod
#' @importClassesFrom SingleCellExperiment SingleCellExperiment
#' @importFrom mclust Mclust mclustBIC
#' @keywords internal
"_PACKAGE"
