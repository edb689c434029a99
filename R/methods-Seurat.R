## Seurat objects are handled through the "ANY" methods (SeuratObject is only
## suggested), which dispatch here when is(x, "Seurat").

.run_seurat <- function(method, x, assay = NULL, spatial_coords = NULL, library_size = NULL, seed = 0L,
                        device = "auto", progress = interactive(), name = method, sample_id = NULL,
                        use_image = FALSE, image_options = NULL, ...) {
    .require_seurat_object()
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    counts <- .seurat_counts(x, assay)
    cells <- colnames(counts)
    pieces <- list(counts = .sparse_counts(counts, paste0(assay, " counts")),
                   coordinates = .seurat_coordinates(x, spatial_coords, cells, assay),
                   spot_names = .spot_names(cells), gene_names = .gene_names(rownames(counts)),
                   library_size = .library_size(library_size, x[[]][cells, , drop = FALSE]),
                   slices = .seurat_slices(x, sample_id, cells, assay))
    .check_use_image(method, use_image)
    images <- .image_request(use_image, image_options, function() .seurat_images(x, assay))
    pieces$images <- images$images
    out <- .embed(method, pieces, c(list(...), images$params), seed, device, progress)
    key <- paste0(gsub("[^[:alnum:]]", "", toupper(name)), "_")
    embedding <- .named_embedding(out$embedding, cells, sub("_$", "", key))
    x[[name]] <- SeuratObject::CreateDimReducObject(embeddings = embedding, key = key, assay = assay)
    if (!is.null(out$encoder_embedding)) {  # STAIG's encoder output, before the projection head
        encoder_key <- paste0(sub("_$", "", key), "ENC_")
        x[[paste0(name, "_encoder")]] <- SeuratObject::CreateDimReducObject(
            embeddings = .named_embedding(out$encoder_embedding, cells, sub("_$", "", encoder_key)), key = encoder_key,
            assay = assay)
    }
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name, out$record)
    x
}

.run_omics_seurat <- function(method, x, assay = NULL, assay2 = NULL, kinds = NULL, spatial_coords = NULL,
                              seed = 0L, device = "auto", progress = interactive(), name = method, ...) {
    .require_seurat_object()
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    modalities <- .seurat_modalities(x, assay, assay2)
    out <- .embed_multiomics(modalities, .seurat_coordinates(x, spatial_coords), .spot_names(colnames(x)), kinds,
                             list(...), seed, device, progress, method = method)
    embeddings <- c(list(out$embedding), out$modality_embeddings)
    names(embeddings) <- c(name, paste0(name, "_", tolower(names(out$modality_embeddings))))
    for (reduction in names(embeddings)) {
        key <- paste0(gsub("[^[:alnum:]]", "", toupper(reduction)), "_")
        x[[reduction]] <- SeuratObject::CreateDimReducObject(
            embeddings = .named_embedding(embeddings[[reduction]], colnames(x), sub("_$", "", key)), key = key,
            assay = assay)
    }
    if (!is.null(out$attention)) {
        for (j in seq_along(out$modalities)) {
            x <- SeuratObject::AddMetaData(x, stats::setNames(out$attention[, j], colnames(x)),
                                           col.name = paste0(name, "_attention_", out$modalities[[j]]))
        }
    }
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name, out$record)
    x
}

## Two assays of a Seurat object as SpaMI's modalities (the second: assay2, else the only other one).
.seurat_modalities <- function(x, assay, assay2) {
    assays <- SeuratObject::Assays(x)
    if (is.null(assay2)) {  # the package's own denoised values (imputeExpression) are not a modality
        others <- setdiff(assays, c(assay, "SPOTSCAPE", "SPAMI"))
        if (length(others) > 1L) {
            stop("the object has several other assays (", paste(others, collapse = ", "), "): name the second ",
                 "modality with assay2 = ", call. = FALSE)
        }
        assay2 <- others
    }
    modalities <- list()
    for (one in c(assay, assay2)) {
        counts <- .seurat_counts(x, one)
        if (!identical(colnames(counts), colnames(x))) {
            stop("assay '", one, "' holds ", ncol(counts), " of the object's ", ncol(x), " spots; paired omics ",
                 "need both modalities on the same spots", call. = FALSE)
        }
        modalities[[one]] <- .modality(counts, rownames(counts), paste0("assay '", one, "' counts"))
    }
    modalities
}

.cluster_seurat <- function(x, reduction = "staig", n_domains = NULL, spatial_coords = NULL, name = "domain",
                            sample_id = NULL, ...) {
    .require_seurat_object()
    if (!reduction %in% SeuratObject::Reductions(x)) {
        stop("reduction '", reduction, "' does not exist: run a model first (e.g. runSTAIG(x)) or name an ",
             "existing one with 'reduction'", call. = FALSE)
    }
    embedding <- SeuratObject::Embeddings(x, reduction = reduction)
    cells <- rownames(embedding)  # all spots, or those of the assay the model ran on (Visium HD: one bin size)
    assay <- SeuratObject::DefaultAssay(x[[reduction]])
    fit <- clusterEmbedding(embedding, n_domains, coordinates = .seurat_coordinates(x, spatial_coords, cells, assay),
                            slices = .seurat_slices(x, sample_id, cells, assay), ...)
    x <- SeuratObject::AddMetaData(x, .all_spots(fit$domain, cells, colnames(x)), col.name = name)
    if (!is.null(fit$unrefined)) {
        x <- SeuratObject::AddMetaData(x, .all_spots(fit$unrefined, cells, colnames(x)),
                                       col.name = paste0(name, "_unrefined"))
    }
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name,
                                            c(list(embedding = reduction), fit$record,
                                              list(silhouette = as.list(fit$silhouette),
                                                   stability = as.list(fit$stability))))
    x
}

## The raw counts of an assay, genes x spots: a Seurat v5 assay (Assay5) from
## its counts layers (split layers, one per sample, joined in the assay's spot
## order), a v3/v4 assay from its counts slot. Only the assay's own spots: in
## a Visium HD object each bin size is an assay with its own spots.
.seurat_counts <- function(x, assay) {
    if (!assay %in% SeuratObject::Assays(x)) {
        stop("assay '", assay, "' does not exist; the object has: ", paste(SeuratObject::Assays(x), collapse = ", "),
             call. = FALSE)
    }
    object <- x[[assay]]
    if (methods::is(object, "Assay5")) {
        all_layers <- .seurat5("Layers")(object)
        layers <- grep("^counts($|\\.)", all_layers, value = TRUE)
        if (length(layers) == 0L) {
            stop("assay '", assay, "' has no counts layer (layers: ", paste(all_layers, collapse = ", "),
                 "); raw counts are needed, e.g. LayerData(x, assay = \"", assay, "\", layer = \"counts\") <- counts",
                 call. = FALSE)
        }
        parts <- lapply(layers, function(layer) .seurat5("LayerData")(object, layer = layer))
        counts <- if (length(parts) == 1L) parts[[1L]] else .join_layers(parts)
        counts <- counts[, intersect(colnames(object), colnames(counts)), drop = FALSE]
    } else if (utils::packageVersion("SeuratObject") >= "5.0.0") {
        counts <- .seurat5("LayerData")(x, assay = assay, layer = "counts")
    } else {
        counts <- SeuratObject::GetAssayData(x, slot = "counts", assay = assay)
    }
    if (prod(dim(counts)) == 0) {
        stop("assay '", assay, "' holds no raw counts (its counts are empty)", call. = FALSE)
    }
    counts
}

## A function that only SeuratObject 5 exports (LayerData, Layers), looked up
## when it is used, so that the package also works with SeuratObject 4.
.seurat5 <- function(name) getExportedValue("SeuratObject", name)

## Split counts layers side by side, over the genes of all of them (a gene
## missing from a layer counts 0 there).
.join_layers <- function(parts) {
    genes <- unique(unlist(lapply(parts, rownames)))
    aligned <- lapply(parts, function(part) {
        part <- methods::as(part, "CsparseMatrix")
        if (identical(rownames(part), genes)) {
            return(part)
        }
        rows <- match(rownames(part), genes)
        triplet <- Matrix::summary(part)
        Matrix::sparseMatrix(i = rows[triplet$i], j = triplet$j, x = triplet$x, dims = c(length(genes), ncol(part)),
                             dimnames = list(genes, colnames(part)))
    })
    do.call(cbind, aligned)
}

## A per-spot result for some spots as a vector over all the object's spots
## (NA for the others), for AddMetaData.
.all_spots <- function(values, cells, all_cells) {
    full <- values[match(all_cells, cells)]
    stats::setNames(full, all_cells)
}

## Spot coordinates (x, y) in full-resolution pixels from the object's
## images (one per slice in a merged object): Visium images keep them in their
## 'coordinates' slot (imagecol, imagerow); other spatial images (Seurat 5's
## VisiumV2, FOVs) give x and y through GetTissueCoordinates(). Each slice
## keeps its own frame. 'cells': the spots wanted (by default all); 'assay':
## prefer that assay's images (a Visium HD object has one per bin size).
.seurat_coordinates <- function(x, spatial_coords, cells = colnames(x), assay = NULL) {
    if (!is.null(spatial_coords)) {
        coordinates <- .coordinates_from(spatial_coords, ncol(x),
                                         reduced = function(name) if (name %in% SeuratObject::Reductions(x))
                                             SeuratObject::Embeddings(x, reduction = name),
                                         columns = x[[]])
        return(coordinates[match(cells, colnames(x)), , drop = FALSE])
    }
    positions <- .seurat_positions(x, cells, assay)
    .coordinate_matrix(as.matrix(positions[cells, c("x", "y"), drop = FALSE]), "the object's images")
}

## One row per spot: x, y and the image (slice) holding it.
.seurat_positions <- function(x, cells = colnames(x), assay = NULL) {
    images <- .seurat_image_names(x, assay)
    if (length(images) == 0L) {
        stop("the Seurat object has no image with spot positions; pass spatial_coords = two meta.data ",
             "columns (x, y) or a matrix", call. = FALSE)
    }
    parts <- lapply(images, function(name) {
        positions <- .seurat_spatial()$image_positions(x[[name]])
        data.frame(x = positions$x, y = positions$y, image = name, row.names = rownames(positions))
    })
    positions <- do.call(rbind, unname(parts))
    if (anyDuplicated(rownames(positions))) {
        stop("some spots appear in more than one image; give each slice's spots unique names (e.g. ",
             "merge(..., add.cell.ids = ...))", call. = FALSE)
    }
    missing <- setdiff(cells, rownames(positions))
    if (length(missing) > 0L) {
        stop(length(missing), " spots have no position in the object's images (e.g. '", missing[1], "')",
             call. = FALSE)
    }
    positions
}

## The shared R code that reads a Seurat image's positions and pictures (also the
## command line's .rds door's), from the Python package, sourced once per session.
.seurat_spatial <- function() {
    if (is.null(.state$seurat_spatial)) {
        helpers <- new.env(parent = baseenv())
        sys.source(.bridge()$seurat_spatial_code(), envir = helpers)
        .state$seurat_spatial <- helpers
    }
    .state$seurat_spatial
}

## The images to read positions from: those of 'assay' when it has any (a
## Visium HD object keeps one image per bin size, each with its assay), else
## all of them (e.g. an SCT assay made from the Spatial one).
.seurat_image_names <- function(x, assay = NULL) {
    if (!is.null(assay)) {
        own <- SeuratObject::Images(x, assay = assay)
        if (length(own) > 0L) {
            return(own)
        }
    }
    SeuratObject::Images(x)
}

## Slices: the meta.data column 'sample_id' when given, else the image that
## holds each spot when the spots lie in several images; NULL for one slice.
.seurat_slices <- function(x, sample_id, cells = colnames(x), assay = NULL) {
    if (!is.null(sample_id)) {
        return(.slices(x[[]][cells, , drop = FALSE], sample_id))
    }
    if (length(.seurat_image_names(x, assay)) < 2L) {
        return(NULL)
    }
    images <- .seurat_positions(x, cells, assay)[cells, "image"]
    if (length(unique(images)) < 2L) NULL else images
}

.require_seurat_object <- function() {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) {
        stop("Seurat objects need the SeuratObject package: install.packages('SeuratObject')", call. = FALSE)
    }
}

## The Seurat object's images (one per slice) as arrays in [0, 1] with the
## scale of the stored image (Visium: 'lowres') and the fiducial diameter in
## full-resolution pixels; images without pixels (e.g. FOVs) are skipped.
.seurat_images <- function(x, assay = NULL) {
    images <- list()
    for (name in .seurat_image_names(x, assay)) {
        picture <- .seurat_spatial()$image_picture(x[[name]])
        if (!is.null(picture)) {
            images[[name]] <- list(array = picture$array, scale = picture$lowres, fiducial = picture$fiducial)
        }
    }
    images
}
