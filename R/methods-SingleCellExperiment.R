#' @rdname runSTAIG
#' @param assay.type Assay holding raw counts (SingleCellExperiment).
#' @param spatial_coords Where the spot coordinates are; see Methods.
#' @param n_epochs,tau,preset Training length, contrastive temperature and
#'   parameter preset (\code{NULL}: the preset's value; for \code{preset}, the
#'   method's default preset).
#' @param library_size Per-spot total counts over all measured genes, when
#'   the assay holds only a subset of them: a numeric vector or the name of a
#'   colData (meta.data) column. \code{NULL}: column sums of the assay.
#' @param seed Seed of the model (Python, NumPy and torch generators).
#' @param device \code{"auto"} (CUDA, then Apple MPS, then CPU) or a torch
#'   device name.
#' @param progress Show a progress bar.
#' @param name Name of the reducedDim (SCE) or reduction (Seurat).
#' @param use_image Let the H&E image guide STAIG (image-feature edge
#'   dropping; on one slice, pseudo-label debiasing). The image comes from
#'   \code{imgData} (SpatialExperiment: per sample, the image with the largest
#'   scale factor) or the Seurat object's images. An object without an image
#'   runs from gene expression with a message.
#' @param image_options Named list of image-feature settings passed to the
#'   Python \code{tl.image_features}, e.g. \code{list(backbone = "resnet50",
#'   weights = "resnet50.pth")}.
#' @param sample_id Column of colData (meta.data) naming each spot's slice.
#'   When it holds several slices they are integrated: one spatial graph per
#'   slice in its own coordinates, genes highly variable in every slice, and
#'   (STAIG) negatives drawn within each spot's slice. \code{NULL}: one
#'   sample. For Seurat objects the default is \code{NULL}, and a merged
#'   object with one image per slice is integrated by image.
#' @export
setMethod("runSTAIG", "SingleCellExperiment", function(x, assay.type = "counts", spatial_coords = NULL,
                                                       library_size = NULL, n_epochs = NULL, tau = NULL, preset = NULL,
                                                       use_image = FALSE, image_options = NULL,
                                                       seed = 0L, device = "auto", progress = interactive(),
                                                       name = "STAIG", sample_id = "sample_id", ...) {
    .run_expression_sce("staig", x, assay.type = assay.type, spatial_coords = spatial_coords,
                        library_size = library_size, use_image = use_image, image_options = image_options,
                        seed = seed, device = device, progress = progress, name = name, sample_id = sample_id,
                        n_epochs = n_epochs, tau = tau, preset = preset, ...)
})

#' @rdname runSTAIG
#' @export
setMethod("runSTAIG", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.run_seurat("staig", x, ...))
    }
    .unsupported(x)
})

#' @rdname runSpotscape
#' @inheritParams runSTAIG
#' @param n_epochs,learning_rate Training length and Adam's learning rate
#'   (\code{NULL}: 1000, and 1e-4 for one slice or 5e-4 for several).
#'   Several learning rates, e.g. the paper's grid \code{c(1e-5, 5e-5, 1e-4,
#'   5e-4, 1e-3)}: one training per rate, and the run whose k-means clustering
#'   (into \code{n_domains}, or the number of best silhouette) has the highest
#'   silhouette is kept; no labels are used. The scores go to the record
#'   (\code{learning_rate_selection}).
#' @param n_domains Expected number of domains; with several slices it sets
#'   the number of prototypes (never taken from labels). \code{NULL}: chosen
#'   by silhouette during training.
#' @export
setMethod("runSpotscape", "SingleCellExperiment", function(x, assay.type = "counts", spatial_coords = NULL,
                                                           n_epochs = NULL, learning_rate = NULL, n_domains = NULL,
                                                           seed = 0L, device = "auto", progress = interactive(),
                                                           name = "Spotscape", sample_id = "sample_id", ...) {
    .run_expression_sce("spotscape", x, assay.type = assay.type, spatial_coords = spatial_coords, seed = seed,
                        device = device, progress = progress, name = name, sample_id = sample_id,
                        n_epochs = n_epochs, learning_rate = learning_rate, n_domains = n_domains, ...)
})

#' @rdname runSpotscape
#' @export
setMethod("runSpotscape", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.run_seurat("spotscape", x, ...))
    }
    .unsupported(x)
})

#' @rdname runSpaMI
#' @param assay.type Assay of the main experiment holding raw counts.
#' @param altexp Name of the \code{altExp} holding the second modality
#'   (\code{NULL}: the only one there is).
#' @param altexp.assay Assay of the \code{altExp} holding raw counts.
#' @param kinds Named character vector saying what a modality holds
#'   (\code{"rna"}, \code{"adt"} or \code{"atac"}) when its name does not.
#' @param spatial_coords Where the spot coordinates are (as in
#'   \code{\link{runSTAIG}}).
#' @param n_epochs Training length (\code{NULL}: 1000 epochs in full batch;
#'   above 10,000 spots, about 2,000 mini-batch steps; see \code{training}
#'   in \code{\link{runSTAIG}}).
#' @param seed,device,progress As in \code{\link{runSTAIG}}.
#' @param name Name of the fused reducedDim (SCE) or reduction (Seurat); the
#'   per-omics embeddings and attention columns are named after it.
#' @export
setMethod("runSpaMI", "SingleCellExperiment", function(x, altexp = NULL, assay.type = "counts",
                                                       altexp.assay = "counts", kinds = NULL, spatial_coords = NULL,
                                                       n_epochs = NULL, seed = 0L, device = "auto",
                                                       progress = interactive(), name = "SpaMI", ...) {
    .run_omics_sce("spami", x, altexp = altexp, assay.type = assay.type, altexp.assay = altexp.assay, kinds = kinds,
                   spatial_coords = spatial_coords, seed = seed, device = device, progress = progress, name = name,
                   n_epochs = n_epochs, ...)
})

## A paired-omics method on the main experiment and one altExp: the fused embedding as reducedDim 'name', one per
## modality as '<name>_<modality>', the attention (when the method has it) as colData columns, the record.
.run_omics_sce <- function(method, x, altexp = NULL, assay.type = "counts", altexp.assay = "counts", kinds = NULL,
                           spatial_coords = NULL, seed = 0L, device = "auto", progress = interactive(), name, ...) {
    modalities <- .sce_modalities(x, altexp, assay.type, altexp.assay)
    out <- .embed_multiomics(modalities, .sce_coordinates(x, spatial_coords), .spot_names(colnames(x)), kinds,
                             list(...), seed, device, progress, method = method)
    SingleCellExperiment::reducedDim(x, name) <- .named_embedding(out$embedding, colnames(x), name)
    for (modality in names(out$modality_embeddings)) {
        piece <- paste0(name, "_", modality)
        SingleCellExperiment::reducedDim(x, piece) <- .named_embedding(out$modality_embeddings[[modality]],
                                                                        colnames(x), piece)
    }
    if (!is.null(out$attention)) {
        for (j in seq_along(out$modalities)) {
            SummarizedExperiment::colData(x)[[paste0(name, "_attention_", out$modalities[[j]])]] <- out$attention[, j]
        }
    }
    S4Vectors::metadata(x) <- .add_record(S4Vectors::metadata(x), name, out$record)
    x
}

#' @rdname runSpaMI
#' @export
setMethod("runSpaMI", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.run_omics_seurat("spami", x, ...))
    }
    .unsupported(x)
})

## The main experiment and one altExp as SpaMI's modalities (named after them).
.sce_modalities <- function(x, altexp, assay.type, altexp.assay) {
    main <- SingleCellExperiment::mainExpName(x)
    main <- if (is.null(main) || !nzchar(main)) "rna" else main
    modalities <- list()
    modalities[[main]] <- .modality(SummarizedExperiment::assay(x, assay.type), rownames(x),
                                    paste0("assay '", assay.type, "'"))
    alternatives <- SingleCellExperiment::altExpNames(x)
    if (is.null(altexp)) {  # the package's own denoised values (imputeExpression) are not a modality
        alternatives <- alternatives[!grepl("_denoised$", alternatives)]
    }
    if (is.null(altexp) && length(alternatives) > 1L) {
        stop("x has several altExps (", paste(alternatives, collapse = ", "), "): name the second modality ",
             "with altexp = ", call. = FALSE)
    }
    altexp <- if (is.null(altexp)) alternatives else altexp
    if (length(altexp) == 1L) {
        if (!altexp %in% SingleCellExperiment::altExpNames(x)) {
            stop("altExp '", altexp, "' does not exist (altExps: ",
                 paste(SingleCellExperiment::altExpNames(x), collapse = ", "), ")", call. = FALSE)
        }
        if (altexp == main) {
            stop("the altExp has the main experiment's name '", main, "': rename one (mainExpName(x) <- ...)",
                 call. = FALSE)
        }
        other <- SingleCellExperiment::altExp(x, altexp)
        modalities[[altexp]] <- .modality(SummarizedExperiment::assay(other, altexp.assay), rownames(other),
                                          paste0("altExp '", altexp, "' assay '", altexp.assay, "'"))
    } else {
        message("no altExp: SpaMI runs on the main experiment alone")
    }
    modalities
}

## One modality's counts and feature names as the Python bridge takes them.
.modality <- function(counts, feature_names, what) {
    list(counts = .sparse_counts(counts, what), feature_names = .gene_names(feature_names))
}

#' @rdname clusterDomains
#' @param dimred reducedDim to cluster (SingleCellExperiment).
#' @param spatial_coords Where the spot coordinates are (as in
#'   \code{\link{runSTAIG}}); used for refinement.
#' @param n_domains Number of domains, or \code{NULL} to choose it (by
#'   silhouette, or \code{choose_by = "stability"}: see \code{\link{clusterEmbedding}}).
#' @param name Column of colData (SCE) or meta.data (Seurat) for the domains.
#' @param sample_id Column of colData (meta.data) naming each spot's slice:
#'   all slices are clustered together and refined within each slice (Seurat:
#'   by image when \code{NULL} and there are several images).
#' @export
setMethod("clusterDomains", "SingleCellExperiment", function(x, dimred = "STAIG", n_domains = NULL,
                                                             spatial_coords = NULL, name = "domain",
                                                             sample_id = "sample_id", ...) {
    if (!dimred %in% SingleCellExperiment::reducedDimNames(x)) {
        stop("reducedDim '", dimred, "' does not exist: run a model first (e.g. runSTAIG(x)) or name an ",
             "existing one with 'dimred'", call. = FALSE)
    }
    slices <- .slices(as.data.frame(SummarizedExperiment::colData(x)), sample_id)
    fit <- clusterEmbedding(SingleCellExperiment::reducedDim(x, dimred), n_domains,
                            coordinates = .sce_coordinates(x, spatial_coords), slices = slices, ...)
    SummarizedExperiment::colData(x)[[name]] <- fit$domain
    if (!is.null(fit$unrefined)) {
        SummarizedExperiment::colData(x)[[paste0(name, "_unrefined")]] <- fit$unrefined
    }
    S4Vectors::metadata(x) <- .add_record(S4Vectors::metadata(x), name,
                                          c(list(embedding = dimred), fit$record,
                                            list(silhouette = as.list(fit$silhouette),
                                                 stability = as.list(fit$stability))))
    x
})

#' @rdname clusterDomains
#' @export
setMethod("clusterDomains", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.cluster_seurat(x, ...))
    }
    .unsupported(x)
})

#' @rdname findDomains
#' @export
setMethod("findDomains", "ANY", function(x, method = "staig", n_domains = NULL, ..., cluster_method = NULL,
                                         refine = "auto", cluster_seed = NULL, name = "domain",
                                         choose_by = c("silhouette", "stability")) {
    info <- .method_info(method)
    choose_by <- match.arg(choose_by)
    embedding_name <- if (is(x, "Seurat")) info$name else info$title
    trained_with <- if ("n_domains" %in% unlist(info$options)) list(n_domains = n_domains)  # e.g. prototypes
    x <- do.call(.run_model, c(list(x, info, embedding_name), trained_with, list(...)))
    if (is.null(cluster_method)) {  # each method's published clusterer
        cluster_method <- if (is.null(info$cluster_auto)) "mclust" else info$cluster_auto
    }
    if (identical(refine, "auto") && isFALSE(info$auto_refine)) {
        refine <- FALSE  # e.g. SpaMI's protocol clusters the embedding as it is
    }
    passed <- list(...)
    if (is.null(cluster_seed)) {
        cluster_seed <- if (is.null(passed$seed)) 0L else passed$seed  # the model's seed drives the clustering too
    }
    if (is.null(n_domains) && choose_by == "silhouette") {
        n_domains <- .chosen_by_training(x, embedding_name)  # Spotscape's prototypes: one choice for both
    }
    shared <- passed[intersect(names(passed), c("spatial_coords", "sample_id"))]
    reduction <- if (is(x, "Seurat")) list(reduction = embedding_name) else list(dimred = embedding_name)
    do.call(clusterDomains, c(list(x), reduction, shared,
                              list(n_domains = n_domains, refine = refine, seed = cluster_seed, name = name,
                                   method = cluster_method, choose_by = choose_by)))
})

## Any registered method on an SCE or Seurat object, by what it is: expression (one or several slices) or paired
## omics. A method added in Python is run here with no R edit.
.run_model <- function(x, info, name, ...) {
    if (is(x, "Seurat")) {
        run <- if (info$kind == "omics") .run_omics_seurat else .run_seurat
    } else if (is(x, "SingleCellExperiment")) {
        run <- if (info$kind == "omics") .run_omics_sce else .run_expression_sce
    } else {
        .unsupported(x)
    }
    run(info$name, x, name = name, ...)
}

## An expression method on an SCE: its images when it uses them (use_image), then the shared bridge call.
.run_expression_sce <- function(method, x, assay.type = "counts", spatial_coords = NULL, library_size = NULL,
                                use_image = FALSE, image_options = NULL, seed = 0L, device = "auto",
                                progress = interactive(), name, sample_id = "sample_id", ...) {
    .check_use_image(method, use_image)
    .run_sce(method, x, assay.type, spatial_coords, library_size, list(...), seed, device, progress, name, sample_id,
             images = .image_request(use_image, image_options, function() .spe_images(x)))
}

## Trains 'method' on the SCE's counts and positions; stores the embedding as
## reducedDim 'name' and its record in the metadata.
.run_sce <- function(method, x, assay.type, spatial_coords, library_size, params, seed, device, progress, name,
                     sample_id = "sample_id", images = NULL) {
    columns <- as.data.frame(SummarizedExperiment::colData(x))
    pieces <- list(counts = .sparse_counts(SummarizedExperiment::assay(x, assay.type), assay.type),
                   coordinates = .sce_coordinates(x, spatial_coords), spot_names = .spot_names(colnames(x)),
                   gene_names = .gene_names(rownames(x)), library_size = .library_size(library_size, columns),
                   slices = .slices(columns, sample_id), images = images$images)
    out <- .embed(method, pieces, c(params, images$params), seed, device, progress)
    SingleCellExperiment::reducedDim(x, name) <- .named_embedding(out$embedding, colnames(x), name)
    if (!is.null(out$encoder_embedding)) {  # STAIG's encoder output, before the projection head
        encoder <- paste0(name, "_encoder")
        SingleCellExperiment::reducedDim(x, encoder) <- .named_embedding(out$encoder_embedding, colnames(x), encoder)
    }
    S4Vectors::metadata(x) <- .add_record(S4Vectors::metadata(x), name, out$record)
    x
}

.library_size <- function(library_size, columns) {
    if (is.null(library_size)) {
        return(NULL)
    }
    if (is.character(library_size) && length(library_size) == 1L) {
        if (!library_size %in% names(columns)) {
            stop("library_size: no column '", library_size, "' in the spot annotations", call. = FALSE)
        }
        library_size <- columns[[library_size]]
    }
    if (!is.numeric(library_size) || length(library_size) != nrow(columns)) {
        stop("'library_size' must be one number per spot or the name of a column holding them", call. = FALSE)
    }
    as.numeric(library_size)
}

.sce_coordinates <- function(x, spatial_coords) {
    if (is.null(spatial_coords)) {
        if (is(x, "SpatialExperiment")) {
            return(.coordinate_matrix(SpatialExperiment::spatialCoords(x), "spatialCoords(x)"))
        }
        if ("spatial" %in% SingleCellExperiment::reducedDimNames(x)) {
            return(.coordinate_matrix(SingleCellExperiment::reducedDim(x, "spatial"), "reducedDim(x, 'spatial')"))
        }
        stop("no spot coordinates found: store them as reducedDim(x, 'spatial') (spots x 2: x, y), use a ",
             "SpatialExperiment, or pass spatial_coords = the name of a reducedDim, two colData columns ",
             "(x, y) or a matrix", call. = FALSE)
    }
    .coordinates_from(spatial_coords, ncol(x),
                      reduced = function(name) if (name %in% SingleCellExperiment::reducedDimNames(x))
                          SingleCellExperiment::reducedDim(x, name),
                      columns = as.data.frame(SummarizedExperiment::colData(x)))
}

## Coordinates given by the user as a matrix, a reducedDim/reduction name or
## two column names.
.coordinates_from <- function(spatial_coords, n_spots, reduced, columns) {
    if (is.matrix(spatial_coords) || is.data.frame(spatial_coords)) {
        coordinates <- .coordinate_matrix(spatial_coords, "spatial_coords")
    } else if (is.character(spatial_coords) && length(spatial_coords) == 1L &&
               !is.null(reduced(spatial_coords))) {
        coordinates <- .coordinate_matrix(reduced(spatial_coords), spatial_coords)
    } else if (is.character(spatial_coords) && length(spatial_coords) == 2L &&
               all(spatial_coords %in% names(columns))) {
        coordinates <- .coordinate_matrix(columns[, spatial_coords], paste(spatial_coords, collapse = ", "))
    } else {
        stop("'spatial_coords' must be a matrix, the name of a stored embedding, or two column names (x, y) ",
             "of the cell annotations; got ", paste(format(spatial_coords), collapse = ", "), call. = FALSE)
    }
    if (nrow(coordinates) != n_spots) {
        stop("'spatial_coords' has ", nrow(coordinates), " rows for ", n_spots, " spots", call. = FALSE)
    }
    coordinates
}

.coordinate_matrix <- function(coordinates, what) {
    coordinates <- as.matrix(coordinates)
    if (!is.numeric(coordinates) || ncol(coordinates) < 2L) {
        stop(what, " must be numeric with (at least) two columns: x, y", call. = FALSE)
    }
    coordinates <- coordinates[, 1:2, drop = FALSE]
    storage.mode(coordinates) <- "double"
    dimnames(coordinates) <- NULL
    coordinates
}

.sparse_counts <- function(counts, what) {
    if (is.null(counts)) {
        stop("no assay '", what, "'", call. = FALSE)
    }
    if (!is(counts, "CsparseMatrix")) {
        counts <- tryCatch(methods::as(counts, "CsparseMatrix"),
                           error = function(e) Matrix::Matrix(as.matrix(counts), sparse = TRUE))
    }
    methods::as(methods::as(counts, "generalMatrix"), "dMatrix")
}

## The slice of each spot from the colData column 'sample_id' (NULL with one
## slice, or when the column is absent and sample_id is the default).
.slices <- function(columns, sample_id) {
    if (is.null(sample_id)) {
        return(NULL)
    }
    if (!is.character(sample_id) || length(sample_id) != 1L) {
        stop("'sample_id' must be the name of the column that says which slice each spot belongs to, or NULL",
             call. = FALSE)
    }
    if (!sample_id %in% names(columns)) {
        if (identical(sample_id, "sample_id")) {
            return(NULL)
        }
        stop("sample_id: no column '", sample_id, "' in the spot annotations (columns: ",
             paste(utils::head(names(columns), 10L), collapse = ", "), ")", call. = FALSE)
    }
    slices <- columns[[sample_id]]
    if (anyNA(slices)) {
        stop(sum(is.na(slices)), " spots have no slice in column '", sample_id, "': fill it in", call. = FALSE)
    }
    slices <- as.character(slices)
    if (length(unique(slices)) > 1L) slices else NULL
}

.spot_names <- function(names) {
    if (is.null(names) || anyDuplicated(names) || anyNA(names)) as.character(seq_along(names)) else names
}

.gene_names <- function(names) {
    if (is.null(names) || anyNA(names) || any(!nzchar(names))) {
        stop("genes need names: set rownames(x) to gene symbols or IDs", call. = FALSE)
    }
    if (anyDuplicated(names)) {
        stop("gene names are duplicated (e.g. '", names[anyDuplicated(names)], "'); make them unique, e.g. ",
             "rownames(x) <- make.unique(rownames(x))", call. = FALSE)
    }
    names
}

.named_embedding <- function(embedding, spot_names, name) {
    embedding <- as.matrix(embedding)
    dimnames(embedding) <- list(spot_names, paste0(name, "_", seq_len(ncol(embedding))))
    embedding
}

## The number of domains the training chose itself (Spotscape's prototypes without n_domains), or NULL.
.chosen_by_training <- function(x, name) {
    records <- if (is(x, "Seurat")) methods::slot(x, "misc")$spatialdomains else S4Vectors::metadata(x)$spatialdomains
    choice <- records[[name]]$training$prototype_choice
    if (is.null(choice$n_domains)) NULL else as.integer(choice$n_domains)
}

.add_record <- function(metadata, name, record) {
    records <- if (is.list(metadata$spatialdomains)) metadata$spatialdomains else list()
    records[[name]] <- record
    metadata$spatialdomains <- records
    metadata
}

.unsupported <- function(x) {
    stop("x must be a SingleCellExperiment, SpatialExperiment or Seurat object, not a '",
         paste(class(x), collapse = "/"), "'", call. = FALSE)
}

## STAIG's image arguments: list(params = use_image/image_options for Python,
## images = one list(array, scale, fiducial) per slice) or NULL for gene mode.
## 'find_images' is called only when an image is wanted.
.image_request <- function(use_image, image_options, find_images) {
    if (!isTRUE(use_image)) {
        return(NULL)
    }
    if (!is.null(image_options) && (!is.list(image_options) || is.null(names(image_options)))) {
        stop("'image_options' must be a named list, e.g. list(backbone = \"resnet18\")", call. = FALSE)
    }
    images <- find_images()
    if (length(images) == 0L) {
        message("runSTAIG: use_image = TRUE but the object holds no tissue image; running from gene expression only")
        return(NULL)
    }
    list(params = list(use_image = TRUE, image_options = if (length(image_options)) image_options),
         images = images)
}

## A SpatialExperiment's images, one per sample (the one with the largest
## scale factor), as height x width x 3 arrays in [0, 1] with their scale
## factor (image pixels per coordinate unit); an empty list otherwise.
.spe_images <- function(x) {
    if (!is(x, "SpatialExperiment")) {
        return(list())
    }
    table <- SpatialExperiment::imgData(x)
    images <- list()
    for (sample in unique(table$sample_id)) {
        rows <- which(table$sample_id == sample)
        best <- rows[which.max(table$scaleFactor[rows])]
        images[[sample]] <- list(array = .raster_array(SpatialExperiment::imgRaster(x, sample_id = sample,
                                                                                    image_id = table$image_id[best])),
                                 scale = table$scaleFactor[best], fiducial = NULL)
    }
    images
}

.raster_array <- function(raster) {
    raster <- as.matrix(raster)
    rgb <- grDevices::col2rgb(raster) / 255
    array(t(rgb), dim = c(nrow(raster), ncol(raster), 3L))
}
