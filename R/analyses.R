#' Pseudotime over an embedding
#'
#' Orders the spots along the embedding a model learned: SpaceFlow's
#' pseudo-spatiotemporal map, as the Spotscape paper used it (a 20-nearest-
#' neighbour graph of the embedding, a diffusion map, diffusion pseudotime
#' from a root spot). Runs \code{sd.tl.pseudotime} in the Python package.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   or a \code{Seurat} object holding an embedding.
#' @param ... For Seurat objects: \code{reduction} (default
#'   \code{"spotscape"}) instead of \code{dimred}, and the other arguments.
#' @param dimred The reducedDim holding the embedding (e.g. \code{"Spotscape"},
#'   \code{"STAIG"} or STAIG's encoder output \code{"STAIG_encoder"}).
#' @param root_domain A value of \code{colData(x)[[domain]]}: the root is that
#'   domain's most outlying spot (e.g. white matter, to order cortical layers
#'   from it). With neither root given, SpaceFlow's rule picks the most
#'   outlying spot of all, so the direction is the data's.
#' @param root_spot The name of the root spot.
#' @param domain The colData (meta.data) column holding the domains.
#' @param n_neighbors,n_dcs Neighbours of the embedding graph (20) and
#'   diffusion components (10).
#' @param seed Seed of the root sample.
#' @param name Column for the pseudotime (0 at the root, 1 at the far end;
#'   \code{NA} for spots without an embedding).
#' @return \code{x} with the pseudotime in \code{colData} (Seurat: meta.data)
#'   and its record (root, how it was chosen) in
#'   \code{metadata(x)$spatialdomains$pseudotime} (Seurat: \code{Misc}).
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce <- runSTAIG(sce, n_epochs = 20, seed = 1)
#' sce <- runPseudotime(sce, dimred = "STAIG_encoder")
#' summary(sce$pseudotime)
#' @export
setGeneric("runPseudotime", function(x, ...) standardGeneric("runPseudotime"))

#' @rdname runPseudotime
#' @export
setMethod("runPseudotime", "SingleCellExperiment", function(x, dimred = "Spotscape", root_domain = NULL,
                                                            root_spot = NULL, domain = "domain",
                                                            n_neighbors = 20L, n_dcs = 10L, seed = 0L,
                                                            name = "pseudotime") {
    embedding <- .reduced(x, dimred)
    domains <- .root_domains(as.data.frame(SummarizedExperiment::colData(x)), root_domain, domain)
    out <- .bridge()$pseudotime(embedding, .spot_names(colnames(x)), domains = domains,
                                root_domain = if (!is.null(root_domain)) as.character(root_domain),
                                root_spot = root_spot, n_neighbors = .count_argument(n_neighbors, "n_neighbors"),
                                n_dcs = .count_argument(n_dcs, "n_dcs"), random_state = .count_argument(seed, "seed"),
                                console = .console)
    SummarizedExperiment::colData(x)[[name]] <- as.numeric(out$pseudotime)
    S4Vectors::metadata(x) <- .add_record(S4Vectors::metadata(x), "pseudotime",
                                          c(list(embedding = dimred, column = name), out$record))
    x
})

#' @rdname runPseudotime
#' @export
setMethod("runPseudotime", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.pseudotime_seurat(x, ...))
    }
    .unsupported(x)
})

#' Transfer labels between two jointly embedded slices
#'
#' Matches each spot of \code{query} to a spot of \code{reference} and gives it
#' that spot's label: among the 20 reference spots most similar in the joint
#' embedding, the one nearest in space once both slices are scaled to the unit
#' square (SLAT's rule, which the Spotscape paper used). Embed the two slices
#' together first (e.g. \code{findDomains} or \code{runSTAIG} with
#' \code{sample_id}, then split), so that their embeddings share one space.
#'
#' @param reference,query Two \code{SingleCellExperiment} (or
#'   \code{SpatialExperiment}) objects, or two \code{Seurat} objects, each
#'   holding its rows of the joint embedding and its coordinates.
#' @param label The reference's colData (meta.data) column to transfer.
#' @param dimred The reducedDim (Seurat: \code{reduction}) of the joint
#'   embedding.
#' @param spatial_coords Where the coordinates are, as in
#'   \code{\link{runSTAIG}} (for both objects).
#' @param truth A query column with its own labels, to score the transfer
#'   (ARI, NMI, accuracy in the record); by default \code{label} when the query
#'   has it.
#' @param n_candidates Most similar reference spots considered (20).
#' @param spatial_smoothing Pick among them the one nearest in space (the
#'   rule assumes both slices face the same way; \code{FALSE} for slices
#'   rotated or mirrored against each other).
#' @param seed Seed of the approximate search used for very large slices.
#' @param name Column of the transferred labels in \code{query}; also
#'   \code{<name>_confidence} (share of the candidates carrying the label
#'   given) and \code{<name>_reference_spot}.
#' @param ... For Seurat objects: \code{reduction} instead of \code{dimred}.
#' @return \code{query}, with the three columns added and the record in its
#'   metadata (Seurat: \code{Misc}).
#' @export
setGeneric("transferLabels", function(reference, query, ...) standardGeneric("transferLabels"))

#' @rdname transferLabels
#' @export
setMethod("transferLabels", c("SingleCellExperiment", "SingleCellExperiment"),
          function(reference, query, label = "domain", dimred = "STAIG", spatial_coords = NULL, truth = NULL,
                   n_candidates = 20L, spatial_smoothing = TRUE, seed = 0L, name = NULL) {
    columns <- as.data.frame(SummarizedExperiment::colData(reference))
    query_columns <- as.data.frame(SummarizedExperiment::colData(query))
    out <- .transfer(.reduced(reference, dimred), .sce_coordinates(reference, spatial_coords), colnames(reference),
                     .label_column(columns, label, "reference"), .reduced(query, dimred),
                     .sce_coordinates(query, spatial_coords), colnames(query),
                     .truth_column(query_columns, truth, label), n_candidates, spatial_smoothing, seed,
                     label_levels = .levels_of(columns[[label]]))
    name <- if (is.null(name)) paste0(label, "_transferred") else name
    for (column in names(out$columns)) {
        SummarizedExperiment::colData(query)[[sub("^transferred", name, column)]] <- out$columns[[column]]
    }
    S4Vectors::metadata(query) <- .add_record(S4Vectors::metadata(query), "transfer_labels",
                                              c(list(embedding = dimred, label = label, column = name), out$record))
    query
})

#' @rdname transferLabels
#' @export
setMethod("transferLabels", c("ANY", "ANY"), function(reference, query, ...) {
    if (is(reference, "Seurat") && is(query, "Seurat")) {
        return(.transfer_seurat(reference, query, ...))
    }
    stop("reference and query must both be SingleCellExperiment (or SpatialExperiment) objects or both Seurat ",
         "objects, not '", class(reference)[1], "' and '", class(query)[1], "'", call. = FALSE)
})

.reduced <- function(x, dimred) {
    if (!dimred %in% SingleCellExperiment::reducedDimNames(x)) {
        stop("reducedDim '", dimred, "' does not exist: run a model first (e.g. runSTAIG(x)) or name an ",
             "existing one with 'dimred'", call. = FALSE)
    }
    as.matrix(SingleCellExperiment::reducedDim(x, dimred))
}

.root_domains <- function(columns, root_domain, domain) {
    if (is.null(root_domain)) {
        return(NULL)
    }
    if (!domain %in% names(columns)) {
        stop("column '", domain, "' does not exist: cluster first (clusterDomains()) or name the column of ",
             "domains with 'domain'", call. = FALSE)
    }
    .na_as_empty(columns[[domain]])
}

.levels_of <- function(values) {
    if (is.factor(values)) levels(values) else sort(unique(as.character(values[!is.na(values)])))
}

## Labels for Python: missing values as "" (reticulate would send NA as the text "NA"), which the bridge reads
## as missing.
.na_as_empty <- function(values) {
    values <- as.character(values)
    values[is.na(values)] <- ""
    values
}

.label_column <- function(columns, label, what) {
    if (!label %in% names(columns)) {
        stop("the ", what, " has no column '", label, "' (columns: ", paste(names(columns), collapse = ", "), ")",
             call. = FALSE)
    }
    .na_as_empty(columns[[label]])
}

.truth_column <- function(columns, truth, label) {
    if (!is.null(truth)) {
        return(.label_column(columns, truth, "query"))
    }
    if (label %in% names(columns)) .na_as_empty(columns[[label]]) else NULL
}

## The bridge call shared by both classes: plain pieces in, query columns out.
.transfer <- function(reference_embedding, reference_coordinates, reference_names, labels, query_embedding,
                      query_coordinates, query_names, truth, n_candidates, spatial_smoothing, seed,
                      label_levels = sort(unique(labels[labels != ""]))) {
    if (!is.logical(spatial_smoothing) || length(spatial_smoothing) != 1L || is.na(spatial_smoothing)) {
        stop("'spatial_smoothing' must be TRUE or FALSE", call. = FALSE)
    }
    out <- .bridge()$transfer_labels(reference_embedding, reference_coordinates, .spot_names(reference_names),
                                     labels, query_embedding, query_coordinates, .spot_names(query_names),
                                     truth = truth, n_candidates = .count_argument(n_candidates, "n_candidates"),
                                     spatial_smoothing = spatial_smoothing,
                                     random_state = .count_argument(seed, "seed"), console = .console)
    missing_to_na <- function(values) {
        values <- as.character(unlist(values))
        values[values == ""] <- NA_character_
        values
    }
    given <- missing_to_na(out$label)
    levels <- intersect(label_levels, given)
    list(columns = list(transferred = factor(given, levels = levels),
                        transferred_confidence = as.numeric(out$confidence),
                        transferred_reference_spot = missing_to_na(out$reference_spot)),
         record = out$record)
}

.pseudotime_seurat <- function(x, reduction = "spotscape", root_domain = NULL, root_spot = NULL, domain = "domain",
                               n_neighbors = 20L, n_dcs = 10L, seed = 0L, name = "pseudotime") {
    .require_seurat_object()
    embedding <- .seurat_reduction(x, reduction)
    domains <- .root_domains(x[[]][rownames(embedding), , drop = FALSE], root_domain, domain)
    out <- .bridge()$pseudotime(embedding, .spot_names(rownames(embedding)), domains = domains,
                                root_domain = if (!is.null(root_domain)) as.character(root_domain),
                                root_spot = root_spot,
                                n_neighbors = .count_argument(n_neighbors, "n_neighbors"),
                                n_dcs = .count_argument(n_dcs, "n_dcs"), random_state = .count_argument(seed, "seed"),
                                console = .console)
    x <- SeuratObject::AddMetaData(x, .all_spots(as.numeric(out$pseudotime), rownames(embedding), colnames(x)),
                                   col.name = name)
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), "pseudotime",
                                            c(list(embedding = reduction, column = name), out$record))
    x
}

.transfer_seurat <- function(reference, query, label = "domain", reduction = "staig", spatial_coords = NULL,
                             truth = NULL, n_candidates = 20L, spatial_smoothing = TRUE, seed = 0L, name = NULL) {
    .require_seurat_object()
    reference_embedding <- .seurat_reduction(reference, reduction)
    query_embedding <- .seurat_reduction(query, reduction)
    reference_cells <- rownames(reference_embedding)
    query_cells <- rownames(query_embedding)
    out <- .transfer(reference_embedding, .seurat_coordinates(reference, spatial_coords, reference_cells),
                     reference_cells, .label_column(reference[[]][reference_cells, , drop = FALSE], label, "reference"),
                     query_embedding, .seurat_coordinates(query, spatial_coords, query_cells), query_cells,
                     .truth_column(query[[]][query_cells, , drop = FALSE], truth, label), n_candidates,
                     spatial_smoothing, seed, label_levels = .levels_of(reference[[]][[label]]))
    name <- if (is.null(name)) paste0(label, "_transferred") else name
    for (column in names(out$columns)) {
        query <- SeuratObject::AddMetaData(query, .all_spots(out$columns[[column]], query_cells, colnames(query)),
                                           col.name = sub("^transferred", name, column))
    }
    methods::slot(query, "misc") <- .add_record(methods::slot(query, "misc"), "transfer_labels",
                                                c(list(embedding = reduction, label = label, column = name),
                                                  out$record))
    query
}

.seurat_reduction <- function(x, reduction) {
    if (!reduction %in% SeuratObject::Reductions(x)) {
        stop("reduction '", reduction, "' does not exist: run a model first (e.g. runSTAIG(x)) or name an ",
             "existing one with 'reduction'", call. = FALSE)
    }
    SeuratObject::Embeddings(x, reduction = reduction)
}

#' Compare conditions within each domain
#'
#' For slices labelled by condition (e.g. control and disease) and clustered
#' together: per domain, the genes that differ between each condition and the
#' reference, and how the domains' shares of the tissue differ. With at least
#' two slices of each condition holding the domain, each slice's counts in the
#' domain are summed (pseudobulk) and tested with DESeq2's Wald test
#' (PyDESeq2); otherwise spots are compared with Wilcoxon's test, which treats
#' them as independent and so overstates significance. The table says which
#' test ran. Runs \code{sd.tl.compare_conditions} in the Python package.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   or a \code{Seurat} object with raw counts, domains and slices.
#' @param ... For Seurat objects: \code{assay} instead of \code{assay.type}.
#' @param condition The colData (meta.data) column naming each spot's
#'   condition (one per slice).
#' @param domain The column of domains.
#' @param sample_id The column naming each spot's slice (the replicates;
#'   Seurat: \code{"orig.ident"} by default).
#' @param reference The reference condition (default: the first one).
#' @param assay.type The assay of raw counts.
#' @param min_spots Domains with fewer spots on either side are left out.
#' @return \code{x} with \code{metadata(x)$spatialdomains$compare_conditions}
#'   (Seurat: \code{Misc}): \code{genes} (domain, condition, gene, log2 fold
#'   change, p-value, adjusted p-value, test, slices and spots on each side),
#'   \code{composition} (each domain's mean share per condition, p-value),
#'   \code{shares} (each slice's share of every domain) and \code{record}.
#' @export
setGeneric("compareConditions", function(x, ...) standardGeneric("compareConditions"))

#' @rdname compareConditions
#' @export
setMethod("compareConditions", "SingleCellExperiment", function(x, condition, domain = "domain",
                                                                sample_id = "sample_id", reference = NULL,
                                                                assay.type = "counts", min_spots = 10L) {
    columns <- as.data.frame(SummarizedExperiment::colData(x))
    counts <- .sparse_counts(SummarizedExperiment::assay(x, assay.type), assay.type)
    out <- .compare(counts, colnames(x), rownames(x), columns, condition, domain, sample_id, reference, min_spots)
    S4Vectors::metadata(x) <- .add_record(S4Vectors::metadata(x), "compare_conditions", out)
    x
})

#' @rdname compareConditions
#' @export
setMethod("compareConditions", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.compare_seurat(x, ...))
    }
    .unsupported(x)
})

.compare <- function(counts, spot_names, gene_names, columns, condition, domain, sample_id, reference, min_spots) {
    values <- lapply(c(condition = condition, domain = domain, sample_id = sample_id), function(column) {
        .label_column(columns, column, "object")
    })
    out <- .bridge()$compare_conditions(counts, .spot_names(spot_names), .gene_names(gene_names),
                                        values$condition, values$domain, values$sample_id,
                                        reference = if (!is.null(reference)) as.character(reference),
                                        min_spots = .count_argument(min_spots, "min_spots"), console = .console)
    list(genes = as.data.frame(out$genes), composition = as.data.frame(out$composition),
         shares = as.data.frame(out$shares), record = out$record)
}

.compare_seurat <- function(x, condition, domain = "domain", sample_id = "orig.ident", reference = NULL,
                            assay = NULL, min_spots = 10L) {
    .require_seurat_object()
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    counts <- .seurat_counts(x, assay)
    cells <- colnames(counts)
    out <- .compare(.sparse_counts(counts, paste0(assay, " counts")), cells, rownames(counts),
                    x[[]][cells, , drop = FALSE], condition, domain, sample_id, reference, min_spots)
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), "compare_conditions", out)
    x
}

#' Denoised expression from Spotscape's or SpaMI's decoder
#'
#' Trains the method and keeps its decoder output. Spotscape: the expression of
#' the genes it used, denoised over the spatial graph, on the log-normalised
#' scale (log1p of counts per 10,000 over those genes). SpaMI (paired omics): one
#' modality's reconstruction, RNA on the log-normalised scale of its highly
#' variable genes, protein as CLR values (SpaMI's ATAC reconstruction does not
#' map back to peaks). Values are clipped at 0. Marker genes and plots can run
#' on them as on any log-normalised data. Runs \code{sd.tl.impute} in the
#' Python package.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   or a \code{Seurat} object with raw counts and spot coordinates.
#' @param ... The method's settings (as in \code{\link{runSpotscape}} or
#'   \code{\link{runSpaMI}}: e.g. \code{n_epochs}); for Seurat objects also
#'   \code{assay}, \code{assay2} (SpaMI's second modality) and
#'   \code{spatial_coords}.
#' @param method A method with a decoder: \code{"spotscape"} (one modality,
#'   one or several slices) or \code{"spami"} (paired omics of one section: the
#'   main experiment and an \code{altExp}, or two Seurat assays), or another
#'   registered in Python.
#' @param assay.type,spatial_coords,sample_id Where the counts, coordinates and
#'   slices are, as in \code{\link{runSTAIG}}.
#' @param altexp,altexp.assay,kinds SpaMI's second modality, as in
#'   \code{\link{runSpaMI}}.
#' @param modality SpaMI: the modality to impute (its name: the main
#'   experiment's name, \code{"rna"} when it has none, or the altExp's;
#'   \code{NULL}: the RNA one).
#' @param seed,device,progress As in \code{\link{runSTAIG}}.
#' @param name The altExp (Seurat: assay) for the denoised values (default
#'   \code{"Spotscape_denoised"} or \code{"SpaMI_denoised"}; Seurat
#'   \code{"SPOTSCAPE"} or \code{"SPAMI"}); the embedding goes to the
#'   reducedDim \code{"Spotscape"} or \code{"SpaMI"} (Seurat: reduction
#'   \code{"spotscape"} or \code{"spami"}).
#' @return \code{x} with \code{altExp(x, name)} holding the denoised values as
#'   its \code{logcounts} assay (Seurat: an assay \code{name} with them in its
#'   data; spots the model left out are \code{NA}), the method's embedding
#'   (replacing one of that name), and the record in the metadata.
#' @examples
#' \dontrun{
#' sce <- imputeExpression(sce)                       # Spotscape
#' sce <- imputeExpression(sce, method = "spami", altexp = "ADT", modality = "ADT")
#' }
#' @export
setGeneric("imputeExpression", function(x, ...) standardGeneric("imputeExpression"))

#' @rdname imputeExpression
#' @export
setMethod("imputeExpression", "SingleCellExperiment", function(x, assay.type = "counts", spatial_coords = NULL,
                                                               sample_id = "sample_id",
                                                               method = "spotscape", altexp = NULL,
                                                               altexp.assay = "counts", kinds = NULL, modality = NULL,
                                                               seed = 0L, device = "auto",
                                                               progress = interactive(), name = NULL, ...) {
    info <- .method_info(method, decodes = TRUE)
    title <- info$title
    name <- if (is.null(name)) paste0(title, "_denoised") else name
    coordinates <- .sce_coordinates(x, spatial_coords)
    if (info$kind == "omics") {
        out <- .impute_multiomics(.sce_modalities(x, altexp, assay.type, altexp.assay), coordinates, colnames(x),
                                  kinds, modality, list(...), seed, device, progress, method)
    } else {
        columns <- as.data.frame(SummarizedExperiment::colData(x))
        out <- .impute(.sparse_counts(SummarizedExperiment::assay(x, assay.type), assay.type), coordinates,
                       colnames(x), rownames(x), .slices(columns, sample_id), list(...), seed, device, progress,
                       method)
    }
    denoised <- SingleCellExperiment::SingleCellExperiment(assays = list(logcounts = out$denoised))
    SingleCellExperiment::altExp(x, name) <- denoised
    SingleCellExperiment::reducedDim(x, title) <- .named_embedding(out$embedding, colnames(x), title)
    S4Vectors::metadata(x) <- .add_record(S4Vectors::metadata(x), name, out$record)
    x
})

#' @rdname imputeExpression
#' @export
setMethod("imputeExpression", "ANY", function(x, ...) {
    if (is(x, "Seurat")) {
        return(.impute_seurat(x, ...))
    }
    .unsupported(x)
})

.impute <- function(counts, coordinates, spot_names, gene_names, slices, params, seed, device, progress, method) {
    out <- .bridge()$impute(counts, coordinates, .spot_names(spot_names), .gene_names(gene_names), slices = slices,
                            params = .count_params(params), random_state = .count_argument(seed, "seed"),
                            device = device, progress = isTRUE(progress), console = .console, method = method)
    out$denoised <- as.matrix(out$denoised)
    dimnames(out$denoised) <- list(unlist(out$genes), spot_names)
    out
}

.impute_multiomics <- function(modalities, coordinates, spot_names, kinds, modality, params, seed, device, progress,
                               method) {
    if (!is.null(modality) && (!is.character(modality) || length(modality) != 1L)) {
        stop("'modality' must be one modality's name, e.g. \"ADT\"", call. = FALSE)
    }
    .warn_if_reference_blas()
    out <- .bridge()$impute_multiomics(modalities, coordinates, .spot_names(spot_names), kinds = .kinds(kinds),
                                       modality = modality, params = .count_params(params),
                                       random_state = .count_argument(seed, "seed"), device = device,
                                       progress = isTRUE(progress), console = .console, method = method)
    out$denoised <- as.matrix(out$denoised)
    dimnames(out$denoised) <- list(unlist(out$features), spot_names)
    out
}

.impute_seurat <- function(x, method = "spotscape", assay = NULL, assay2 = NULL, kinds = NULL,
                           modality = NULL, spatial_coords = NULL, sample_id = NULL, seed = 0L, device = "auto",
                           progress = interactive(), name = NULL, ...) {
    .require_seurat_object()
    info <- .method_info(method, decodes = TRUE)
    name <- if (is.null(name)) toupper(method) else name
    assay <- if (is.null(assay)) SeuratObject::DefaultAssay(x) else assay
    if (info$kind == "omics") {
        cells <- colnames(x)
        out <- .impute_multiomics(.seurat_modalities(x, assay, assay2), .seurat_coordinates(x, spatial_coords),
                                  cells, kinds, modality, list(...), seed, device, progress, method)
    } else {
        counts <- .seurat_counts(x, assay)
        cells <- colnames(counts)
        if (!identical(cells, colnames(x))) {
            stop("assay '", assay, "' holds ", length(cells), " of the object's ", ncol(x), " spots: ",
                 "imputeExpression needs an assay of every spot (subset the object to that assay's spots first)",
                 call. = FALSE)
        }
        out <- .impute(.sparse_counts(counts, paste0(assay, " counts")),
                       .seurat_coordinates(x, spatial_coords, cells, assay), cells, rownames(counts),
                       .seurat_slices(x, sample_id, cells, assay), list(...), seed, device, progress, method)
    }
    x[[name]] <- SeuratObject::CreateAssayObject(data = methods::as(out$denoised, "CsparseMatrix"))
    x[[method]] <- SeuratObject::CreateDimReducObject(
        embeddings = .named_embedding(out$embedding, cells, toupper(method)), key = paste0(toupper(method), "_"),
        assay = assay)
    methods::slot(x, "misc") <- .add_record(methods::slot(x, "misc"), name, out$record)
    x
}
