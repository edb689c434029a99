## Seurat objects are handled through the "ANY" methods (SeuratObject is only
## suggested), which dispatch here when is(x, "Seurat").

.run_seurat <- function(method, x, assay = NULL, spatial_coords = NULL, library_size = NULL, seed = 0L,
                        device = "auto", progress = interactive(), name = method, sample_id = NULL,
                        use_image = FALSE, image_options = NULL, ...) {
    .require_seurat_object()
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    if (!assay %in% SeuratObject::Assays(x)) {
        stop("assay '", assay, "' does not exist; the object has: ", paste(SeuratObject::Assays(x), collapse = ", "),
             call. = FALSE)
    }
    counts <- SeuratObject::GetAssayData(x, slot = "counts", assay = assay)
    if (prod(dim(counts)) == 0) {
        stop("assay '", assay, "' holds no raw counts (counts slot is empty)", call. = FALSE)
    }
    pieces <- list(counts = .sparse_counts(counts, paste0(assay, " counts")),
                   coordinates = .seurat_coordinates(x, spatial_coords), spot_names = .spot_names(colnames(x)),
                   gene_names = .gene_names(rownames(counts)), library_size = .library_size(library_size, x[[]]),
                   slices = .seurat_slices(x, sample_id))
    if (isTRUE(use_image) && method != "staig") {
        stop("use_image applies to runSTAIG only", call. = FALSE)
    }
    images <- .image_request(use_image, image_options, function() .seurat_images(x))
    pieces$images <- images$images
    out <- .embed(method, pieces, c(list(...), images$params), seed, device, progress)
    key <- paste0(gsub("[^[:alnum:]]", "", toupper(name)), "_")
    embedding <- .named_embedding(out$embedding, colnames(x), sub("_$", "", key))
    x[[name]] <- SeuratObject::CreateDimReducObject(embeddings = embedding, key = key, assay = assay)
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name, out$record)
    x
}

.run_spami_seurat <- function(x, assay = NULL, assay2 = NULL, kinds = NULL, spatial_coords = NULL,
                              n_epochs = NULL, seed = 0L, device = "auto", progress = interactive(), name = "spami",
                              ...) {
    .require_seurat_object()
    assays <- SeuratObject::Assays(x)
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    if (is.null(assay2)) {
        others <- setdiff(assays, assay)
        if (length(others) > 1L) {
            stop("the object has several other assays (", paste(others, collapse = ", "), "): name the second ",
                 "modality with assay2 = ", call. = FALSE)
        }
        assay2 <- others
    }
    modalities <- list()
    for (one in c(assay, assay2)) {
        if (!one %in% assays) {
            stop("assay '", one, "' does not exist; the object has: ", paste(assays, collapse = ", "), call. = FALSE)
        }
        counts <- SeuratObject::GetAssayData(x, slot = "counts", assay = one)
        if (prod(dim(counts)) == 0) {
            stop("assay '", one, "' holds no raw counts (counts slot is empty)", call. = FALSE)
        }
        modalities[[one]] <- .modality(counts, rownames(counts), paste0("assay '", one, "' counts"))
    }
    out <- .embed_multiomics(modalities, .seurat_coordinates(x, spatial_coords), .spot_names(colnames(x)), kinds,
                             list(n_epochs = n_epochs, ...), seed, device, progress)
    embeddings <- c(list(out$embedding), out$modality_embeddings[out$modalities])
    names(embeddings) <- c(name, paste0(name, "_", tolower(out$modalities)))
    for (reduction in names(embeddings)) {
        key <- paste0(gsub("[^[:alnum:]]", "", toupper(reduction)), "_")
        x[[reduction]] <- SeuratObject::CreateDimReducObject(
            embeddings = .named_embedding(embeddings[[reduction]], colnames(x), sub("_$", "", key)), key = key,
            assay = assay)
    }
    for (j in seq_along(out$modalities)) {
        x <- SeuratObject::AddMetaData(x, stats::setNames(out$attention[, j], colnames(x)),
                                       col.name = paste0(name, "_attention_", out$modalities[[j]]))
    }
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name, out$record)
    x
}

.cluster_seurat <- function(x, reduction = "staig", n_domains = NULL, spatial_coords = NULL, name = "domain",
                            sample_id = NULL, ...) {
    .require_seurat_object()
    if (!reduction %in% SeuratObject::Reductions(x)) {
        stop("reduction '", reduction, "' does not exist: run a model first (e.g. runSTAIG(x)) or name an ",
             "existing one with 'reduction'", call. = FALSE)
    }
    fit <- clusterEmbedding(SeuratObject::Embeddings(x, reduction = reduction), n_domains,
                            coordinates = .seurat_coordinates(x, spatial_coords),
                            slices = .seurat_slices(x, sample_id), ...)
    x <- SeuratObject::AddMetaData(x, stats::setNames(fit$domain, colnames(x)), col.name = name)
    if (!is.null(fit$unrefined)) {
        x <- SeuratObject::AddMetaData(x, stats::setNames(fit$unrefined, colnames(x)),
                                       col.name = paste0(name, "_unrefined"))
    }
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name,
                                            c(list(embedding = reduction), fit$record,
                                              list(silhouette = as.list(fit$silhouette))))
    x
}

## Spot coordinates (x, y) in full-resolution pixels from the object's
## images (one per slice in a merged object): Visium images keep them in their
## 'coordinates' slot (imagecol, imagerow); other spatial images give x and y
## through GetTissueCoordinates(). Each slice keeps its own frame.
.seurat_coordinates <- function(x, spatial_coords) {
    if (!is.null(spatial_coords)) {
        return(.coordinates_from(spatial_coords, ncol(x),
                                 reduced = function(name) if (name %in% SeuratObject::Reductions(x))
                                     SeuratObject::Embeddings(x, reduction = name),
                                 columns = x[[]]))
    }
    positions <- .seurat_positions(x)
    .coordinate_matrix(as.matrix(positions[colnames(x), c("x", "y"), drop = FALSE]), "the object's images")
}

## One row per spot: x, y and the image (slice) holding it.
.seurat_positions <- function(x) {
    images <- SeuratObject::Images(x)
    if (length(images) == 0L) {
        stop("the Seurat object has no image with spot positions; pass spatial_coords = two meta.data ",
             "columns (x, y) or a matrix", call. = FALSE)
    }
    parts <- lapply(images, function(name) {
        image <- x[[name]]
        positions <- if ("coordinates" %in% methods::slotNames(image) &&
                         all(c("imagecol", "imagerow") %in% names(methods::slot(image, "coordinates")))) {
            methods::slot(image, "coordinates")[, c("imagecol", "imagerow")]
        } else {
            SeuratObject::GetTissueCoordinates(image)[, c("x", "y")]
        }
        data.frame(x = positions[[1]], y = positions[[2]], image = name, row.names = rownames(positions))
    })
    positions <- do.call(rbind, unname(parts))
    if (anyDuplicated(rownames(positions))) {
        stop("some spots appear in more than one image; give each slice's spots unique names (e.g. ",
             "merge(..., add.cell.ids = ...))", call. = FALSE)
    }
    missing <- setdiff(colnames(x), rownames(positions))
    if (length(missing) > 0L) {
        stop(length(missing), " spots have no position in the object's images (e.g. '", missing[1], "')",
             call. = FALSE)
    }
    positions
}

## Slices: the meta.data column 'sample_id' when given, else the image that
## holds each spot when there are several images; NULL for one slice.
.seurat_slices <- function(x, sample_id) {
    if (!is.null(sample_id)) {
        return(.slices(x[[]], sample_id))
    }
    if (length(SeuratObject::Images(x)) < 2L) {
        return(NULL)
    }
    .seurat_positions(x)[colnames(x), "image"]
}

.require_seurat_object <- function() {
    if (!requireNamespace("SeuratObject", quietly = TRUE)) {
        stop("Seurat objects need the SeuratObject package: install.packages('SeuratObject')", call. = FALSE)
    }
}

## The Seurat object's images (one per slice) as arrays in [0, 1] with the
## scale of the stored image (Visium: 'lowres') and the fiducial diameter in
## full-resolution pixels; images without pixels (e.g. FOVs) are skipped.
.seurat_images <- function(x) {
    images <- list()
    for (name in SeuratObject::Images(x)) {
        image <- x[[name]]
        if (!"image" %in% methods::slotNames(image) || length(dim(methods::slot(image, "image"))) != 3L) {
            next
        }
        factors <- methods::slot(image, "scale.factors")
        images[[name]] <- list(array = methods::slot(image, "image"), scale = factors$lowres,
                               fiducial = factors$fiducial)
    }
    images
}
