#' Write a sample's HTML report
#'
#' Renders the same self-contained HTML report as the command line
#' (\code{spatialdomains report}): sample overview and QC, domains on the
#' tissue, UMAP, domain sizes, marker dot plot and heatmap, sortable tables of
#' differentially expressed genes (Wilcoxon; significant: |log2FC| > 0.25 and
#' Benjamini-Hochberg adjusted p < 0.05, or raw p with \code{pvalue = "raw"},
#' the STAIG paper's filter), volcano plots, GO enrichment dot plots and tables, integration plots
#' for several slices, and provenance. GO enrichment uses clusterProfiler's
#' \code{enrichGO} when it is installed, and otherwise an exact
#' re-implementation of it on org.Hs.eg.db / GO.db (the report says which ran).
#'
#' By default the domains already in the object (e.g. from
#' \code{\link{findDomains}}) are reported as they are, with the stored
#' embedding behind the UMAP; give \code{method} to find them afresh instead.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   or a \code{Seurat} object with raw counts and spot coordinates.
#' @param file The HTML file to write. Nothing is written unless the whole
#'   report succeeds; an existing report there is replaced only with
#'   \code{force = TRUE} (and never a file spatialdomains did not write).
#' @param ... Arguments for the method (see the Methods section).
#' @return The path of the report, invisibly. \code{x} is not changed.
#' @section Methods:
#' All methods take \code{domains} (the column holding the domains, default
#' \code{"domain"}), \code{method} (\code{NULL}: report those domains;
#' any registered method, e.g. \code{"staig"} or \code{"spotscape"}: find them),
#' \code{n_domains}, \code{species} (\code{"auto"}, \code{"human"},
#' \code{"mouse"}, ...), \code{gene_sets} (a GMT file instead of GO),
#' \code{engine} (\code{"auto"}, \code{"clusterProfiler"}, \code{"fallback"}),
#' \code{pvalue} (\code{"adjusted"} or \code{"raw"}: the p value the marker
#' threshold applies to) and \code{max_pvalue} (0.05),
#' \code{sample} (the name shown), \code{seed}, \code{epochs},
#' \code{outputs_dir} (also write the marker and GO tables, the result .h5ad and
#' the provenance there; it must be new or empty, or hold an earlier report's
#' tables, replaced with \code{force = TRUE}), \code{label_key} (a column
#' annotating the spots, e.g. a pathologist's layers: the report compares the
#' domains with it), \code{preset} (the method's settings preset, e.g.
#' \code{"cells"} for STAIG on Xenium, MERFISH or CosMx cells), \code{refine}
#' (\code{"auto"}, \code{TRUE} or \code{FALSE}: majority vote over each spot's 15
#' nearest; \code{"auto"} is the method's choice), \code{show_code} and \code{force};
#' every other report option (\code{cluster_method}, \code{min_log2fc},
#' \code{ontology}, \code{condition_key}, ...) and the method's own settings
#' (e.g. \code{tau}) by name, checked together before any work.
#' \describe{
#'   \item{SingleCellExperiment}{\code{assay.type} (default \code{"counts"}),
#'     \code{spatial_coords} (as in \code{\link{runSTAIG}}), \code{dimred} (the
#'     embedding for the UMAP; default: STAIG, Spotscape or SpaMI when stored).
#'     A SpatialExperiment's first image is drawn under the spots.}
#'   \item{Seurat}{\code{assay}, \code{spatial_coords}, \code{reduction}
#'     (default: staig, spotscape or spami when stored); domains from
#'     \code{meta.data}.}
#' }
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce$domain <- sce$ground_truth
#' report <- domainReport(sce, tempfile(fileext = ".html"), engine = "fallback")
#' file.exists(report)
#' @export
setGeneric("domainReport", function(x, file, ...) standardGeneric("domainReport"))

#' @rdname domainReport
#' @param assay.type,spatial_coords,dimred See the Methods section.
#' @export
setMethod("domainReport", "SingleCellExperiment", function(x, file, assay.type = "counts", spatial_coords = NULL,
                                                         dimred = NULL, ...) {
    columns <- as.data.frame(SummarizedExperiment::colData(x))
    reduced <- SingleCellExperiment::reducedDimNames(x)
    dimred <- .report_embedding_name(dimred, reduced, .method_names("title"), "dimred")
    rows <- as.data.frame(SummarizedExperiment::rowData(x))
    pieces <- list(counts = .sparse_counts(SummarizedExperiment::assay(x, assay.type), assay.type),
                   coordinates = .sce_coordinates(x, spatial_coords), spot_names = .spot_names(colnames(x)),
                   gene_names = .gene_names(rownames(x)), columns = columns,
                   embedding = if (!is.null(dimred)) SingleCellExperiment::reducedDim(x, dimred),
                   embedding_name = dimred, symbols = .symbol_column(rows),
                   slices = .slices(columns, "sample_id"), image = .spe_image(x))
    .render_report(pieces, file, ...)
})

#' @rdname domainReport
#' @export
setMethod("domainReport", "ANY", function(x, file, ...) {
    if (is(x, "Seurat")) {
        return(.seurat_report(x, file, ...))
    }
    .unsupported(x)
})

.seurat_report <- function(x, file, assay = NULL, spatial_coords = NULL, reduction = NULL, ...) {
    .require_seurat_object()
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    counts <- .seurat_counts(x, assay)
    cells <- colnames(counts)
    reduction <- .report_embedding_name(reduction, SeuratObject::Reductions(x), .method_names("name"),
                                        "reduction")
    pieces <- list(counts = .sparse_counts(counts, paste0(assay, " counts")),
                   coordinates = .seurat_coordinates(x, spatial_coords, cells, assay), spot_names = .spot_names(cells),
                   gene_names = .gene_names(rownames(counts)), columns = x[[]][cells, , drop = FALSE],
                   embedding = if (!is.null(reduction)) SeuratObject::Embeddings(x, reduction)[cells, , drop = FALSE],
                   embedding_name = reduction, symbols = NULL, slices = .seurat_slices(x, NULL, cells, assay),
                   image = NULL)
    .render_report(pieces, file, ...)
}

## Shared by all classes: choose what to report, then let Python render it. Every report option and method
## setting in '...' goes to Python by name, where one request checks them all (in R's words) before any work.
.render_report <- function(pieces, file, domains = "domain", method = NULL, label_key = NULL, gene_sets = NULL,
                           outputs_dir = NULL, show_code = FALSE, force = FALSE, ...) {
    if (!is.character(file) || length(file) != 1L || !nzchar(file)) {
        stop("'file' must be the path of the HTML file to write", call. = FALSE)
    }
    labels <- NULL
    if (is.null(method)) {
        if (!domains %in% names(pieces$columns)) {
            stop("no column '", domains, "' with domains in the object: run findDomains() first, name the column ",
                 "with domains = ..., or give method = \"staig\" to find them in the report", call. = FALSE)
        }
        labels <- as.character(pieces$columns[[domains]])
        method <- .bridge()$method_info()$precomputed
    }
    annotation <- NULL
    if (!is.null(label_key)) {
        if (!is.character(label_key) || length(label_key) != 1L || !label_key %in% names(pieces$columns)) {
            stop("label_key must name a column of the cell annotations (colData or meta.data) that annotates ",
                 "the spots; the object has: ", paste(names(pieces$columns), collapse = ", "), call. = FALSE)
        }
        annotation <- as.character(pieces$columns[[label_key]])
    }
    options <- c(.count_params(list(...)),
                 list(gene_sets = if (!is.null(gene_sets)) normalizePath(gene_sets, mustWork = FALSE),
                      show_code = isTRUE(show_code), force = isTRUE(force),
                      outputs_dir = if (!is.null(outputs_dir)) normalizePath(outputs_dir, mustWork = FALSE)))
    if (!is.null(options$seed)) {
        options$seed <- .count_argument(options$seed, "seed")
    }
    file <- normalizePath(file, mustWork = FALSE)
    path <- .bridge()$report(pieces$counts, pieces$coordinates, pieces$spot_names, pieces$gene_names, file,
                             domains = labels, embedding = pieces$embedding, embedding_name = pieces$embedding_name,
                             symbols = pieces$symbols, slices = pieces$slices, image = pieces$image$array,
                             annotation = annotation, label_key = label_key,
                             image_scale = if (is.null(pieces$image)) 1 else pieces$image$scale,
                             method = method, options = Filter(Negate(is.null), options), console = .console)
    invisible(path)
}

## The registered methods' names (Seurat reductions) or titles (SCE reducedDims), in the registry's order.
.method_names <- function(what) {
    vapply(.method_info(), function(one) one[[what]], character(1L), USE.NAMES = FALSE)
}

.report_embedding_name <- function(chosen, available, preferred, what) {
    if (!is.null(chosen)) {
        if (!chosen %in% available) {
            stop(what, " '", chosen, "' does not exist; the object has: ",
                 paste(available, collapse = ", "), call. = FALSE)
        }
        return(chosen)
    }
    found <- intersect(preferred, available)
    if (length(found)) found[[1L]] else NULL
}

.symbol_column <- function(rows) {
    for (name in c("symbol", "Symbol", "gene_name", "gene_symbol", "SYMBOL")) {
        if (name %in% names(rows)) {
            return(as.character(rows[[name]]))
        }
    }
    NULL
}

## A SpatialExperiment's first image as a height x width x 3 array in [0, 1],
## with its scale factor (image pixels per coordinate unit); NULL otherwise.
.spe_image <- function(x) {
    if (!is(x, "SpatialExperiment") || nrow(SpatialExperiment::imgData(x)) == 0L) {
        return(NULL)
    }
    list(array = .raster_array(SpatialExperiment::imgRaster(x)),
         scale = SpatialExperiment::imgData(x)$scaleFactor[[1L]])
}
