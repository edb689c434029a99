#' Learn a STAIG embedding
#'
#' Trains STAIG (gene-expression mode: graph contrastive learning on the
#' spatial 5-nearest-neighbour graph) on raw counts and stores the embedding in
#' the object. The model runs in the Python package through reticulate (see
#' \code{\link{useSpatialdomainsPython}}); on a GPU when one is present.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   or a \code{Seurat} object with raw counts and spot coordinates.
#' @param ... Arguments for the method (see the Methods section), and model
#'   parameters passed to Python: \code{learning_rate} (several values: one
#'   training each, the run of best silhouette kept, as in
#'   \code{\link{runSpotscape}}), \code{n_neighbors},
#'   \code{n_top_genes}, \code{gene_selection} (\code{"seurat_v3"}, \code{"mvp"},
#'   \code{"spatial"}), \code{n_resamples}, \code{n_layers}, \code{edge_drop}, \code{positives},
#'   \code{memory_budget_mb}.
#' @return \code{x}, with the embedding added (SCE: \code{reducedDim(x, name)};
#'   Seurat: the reduction \code{name}; the encoder output, before the projection
#'   head, as \code{<name>_encoder}) and the parameters, seed, versions and
#'   timings in \code{metadata(x)$spatialdomains} (Seurat:
#'   \code{Misc(x, "spatialdomains")}). Nothing else in \code{x} changes.
#' @section Methods:
#' All methods take \code{n_epochs}, \code{tau}, \code{preset}
#' (\code{"paper"}, \code{"published"}, or \code{"cells"} for cell-resolution data), \code{seed}, \code{device}
#' (\code{"auto"}, \code{"cpu"}, \code{"cuda"}), \code{n_threads} (CPU threads; default: one
#' per core that other work leaves free, with R's BLAS kept to one thread
#' during the call), \code{training} (\code{"auto"}: full batch up to 10,000
#' spots, mini-batches of \code{batch_size} spots above; \code{"full"};
#' \code{"minibatch"}), \code{progress} and \code{name}. Where the counts and
#' coordinates come from:
#' \describe{
#'   \item{SingleCellExperiment}{\code{assay.type} (default \code{"counts"});
#'     \code{spatial_coords}: \code{NULL} uses \code{spatialCoords(x)} for a
#'     SpatialExperiment, otherwise \code{reducedDim(x, "spatial")}; or give
#'     the name of a reducedDim, two colData column names (x, y) or a matrix.}
#'   \item{Seurat}{\code{assay} (default: the default assay): its raw
#'     counts (Seurat v5: the counts layers, split layers joined; v4: the
#'     counts slot) and only its spots, so a Visium HD object runs on one
#'     bin size (e.g. \code{assay = "Spatial.016um"}; the other bins get
#'     \code{NA} domains); \code{spatial_coords}: \code{NULL} uses the
#'     full-resolution spot positions of the assay's image (or of the
#'     object's images); or two meta.data column names or a matrix.}
#' }
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce <- runSTAIG(sce, n_epochs = 20, seed = 1)
#' dim(SingleCellExperiment::reducedDim(sce, "STAIG"))
#' @export
setGeneric("runSTAIG", function(x, ...) standardGeneric("runSTAIG"))

#' Learn a Spotscape embedding
#'
#' Trains Spotscape (single slice: a GCN autoencoder trained with the
#' Similarity Telescope loss, which asks every spot's similarities to all
#' other spots to agree between two augmented views) on raw counts and stores
#' the 64-dimensional encoder output in the object. Runs in the Python package
#' through reticulate.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   or a \code{Seurat} object with raw counts and spot coordinates.
#' @param ... Arguments for the method, and model parameters passed to Python:
#'   \code{n_top_genes}, \code{gene_selection}, \code{graph} (\code{"auto"}: radius on spot or bin
#'   lattices, k-NN on cells; or \code{"radius"}, \code{"knn"}),
#'   \code{radius}, \code{batch_norm_momentum}. For Seurat objects:
#'   \code{assay}, \code{spatial_coords}, \code{n_epochs},
#'   \code{learning_rate}, \code{seed}, \code{device}, \code{progress},
#'   \code{name} (default \code{"spotscape"}).
#' @return \code{x} with the embedding (SCE: \code{reducedDim(x, "Spotscape")};
#'   Seurat: reduction \code{spotscape}) and its record in the metadata.
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce <- runSpotscape(sce, n_epochs = 20, seed = 1)
#' dim(SingleCellExperiment::reducedDim(sce, "Spotscape"))
#' @export
setGeneric("runSpotscape", function(x, ...) standardGeneric("runSpotscape"))

#' Learn a SpaMI embedding from paired omics
#'
#' Trains SpaMI (spatial multi-omics: one graph encoder per omics trained
#' with a Deep-Graph-Infomax loss, a per-spot attention that fuses them, a
#' cosine correspondence between the omics and per-omics decoders) on two
#' modalities measured on the same spots, RNA + protein or RNA + ATAC. Stores
#' the fused embedding, each omics' own embedding and the per-spot attention
#' weights (which omics drives each spot). Runs in the Python package through
#' reticulate.
#'
#' @param x A \code{SingleCellExperiment} (including \code{SpatialExperiment})
#'   whose second modality is an \code{altExp}, or a \code{Seurat} object with
#'   a second assay. Raw counts in both.
#' @param ... Arguments for the method, and model parameters passed to Python:
#'   \code{learning_rate}, \code{n_neighbors} (3), \code{out_dim} (64),
#'   \code{dgi_weights}, \code{reconstruction_weights},
#'   \code{correspondence_weight}, \code{n_pcs}, \code{n_top_genes},
#'   \code{min_cells}, \code{balance}, \code{preset} (\code{"default"},
#'   \code{"cells"} for cell-resolution data (6 neighbours), or SpaMI's
#'   published settings \code{"misar"}, \code{"p22"}, \code{"thymus"}).
#' @return \code{x} with the fused embedding (SCE: \code{reducedDim(x, name)};
#'   Seurat: reduction \code{tolower(name)}), each modality's embedding
#'   (\code{<name>_<modality>}), the attention weights as columns
#'   \code{<name>_attention_<modality>} of colData (meta.data), and the record
#'   in the metadata. Nothing else in \code{x} changes.
#' @section Methods:
#' \describe{
#'   \item{SingleCellExperiment}{The main experiment is one modality
#'     (\code{assay.type}, named by \code{mainExpName(x)} or \code{"rna"}),
#'     the \code{altExp} \code{altexp} the other (\code{altexp.assay}); with
#'     no \code{altExp} SpaMI runs on the main experiment alone.}
#'   \item{Seurat}{\code{assay} (default: the default assay) and
#'     \code{assay2} (default: the only other assay), counts slots.}
#' }
#' What each modality holds is read from its name (RNA, ADT/protein,
#' ATAC/peaks); \code{kinds} names it otherwise, e.g.
#' \code{kinds = c(Antibodies = "adt")}.
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateMultiomics(n_spots = 300, n_domains = 3, seed = 1)
#' sce <- runSpaMI(sce, n_epochs = 20, seed = 1)
#' head(sce$SpaMI_attention_rna)
#' @export
setGeneric("runSpaMI", function(x, ...) standardGeneric("runSpaMI"))

#' Cluster an embedding into domains and store them in the object
#'
#' Runs \code{\link{clusterEmbedding}} (mclust EEE in R, optional
#' refinement, automatic number of domains) on a stored embedding.
#'
#' @param x A \code{SingleCellExperiment}, \code{SpatialExperiment} or
#'   \code{Seurat} object holding an embedding.
#' @param ... \code{dimred} (SCE) or \code{reduction} (Seurat): the embedding
#'   to cluster (default \code{"STAIG"} / \code{"staig"});
#'   \code{spatial_coords} as in \code{\link{runSTAIG}}; \code{name}: the
#'   colData / meta.data column to create (default \code{"domain"}); and the
#'   arguments of \code{\link{clusterEmbedding}}.
#' @return \code{x} with the domains as a factor column (and, when refined,
#'   the raw clustering in \code{<name>_unrefined}) and the clustering record in
#'   the metadata.
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce <- runSTAIG(sce, n_epochs = 20, seed = 1)
#' sce <- clusterDomains(sce, n_domains = 3)
#' table(sce$domain, sce$ground_truth)
#' @export
setGeneric("clusterDomains", function(x, ...) standardGeneric("clusterDomains"))

#' Find spatial domains in one call
#'
#' Learns an embedding with \code{method} (\code{runSTAIG()} for
#' \code{"staig"}, \code{runSpotscape()} for \code{"spotscape"},
#' \code{runSpaMI()} for \code{"spami"}), then clusters it with
#' \code{\link{clusterDomains}} (for SpaMI, \code{refine = "auto"} does not
#' refine: its protocol clusters the embedding as it is).
#'
#' @param x A \code{SingleCellExperiment}, \code{SpatialExperiment} or
#'   \code{Seurat} object with raw counts and coordinates.
#' @param method The model: \code{"staig"}, \code{"spotscape"},
#'   \code{"spami"} (paired omics), \code{"baseline"}, or any other method
#'   registered in the Python package (its clustering and refinement rules come
#'   with it).
#' @param ... Passed to the model (e.g. \code{n_epochs}, \code{seed},
#'   \code{assay.type}, \code{spatial_coords}).
#' @param cluster_method \code{"mclust"} or \code{"kmeans"} (see
#'   \code{\link{clusterEmbedding}}); \code{NULL}: the model's published
#'   clusterer, k-means for Spotscape and mclust otherwise.
#' @param n_domains Number of domains, or \code{NULL} to choose it: the number
#'   Spotscape's prototypes chose during training (so both agree), otherwise
#'   by silhouette.
#' @param refine,cluster_seed Refinement (\code{TRUE}, \code{FALSE},
#'   \code{"auto"}) and the seed of the clustering (\code{NULL}: the model's
#'   \code{seed}, so one seed drives every random step).
#' @param name Column that receives the domains.
#' @param choose_by Without \code{n_domains}: choose the number by
#'   \code{"silhouette"} (Spotscape's own choice at the end of its warm-up, when
#'   it made one) or by \code{"stability"} (see \code{\link{clusterEmbedding}}).
#' @return \code{x} with the embedding, the domains and their records added.
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce <- findDomains(sce, n_domains = 3, n_epochs = 20, seed = 1)
#' table(sce$domain, sce$ground_truth)
#' @export
setGeneric("findDomains", function(x, method = "staig", n_domains = NULL, ..., cluster_method = NULL,
                                   refine = "auto", cluster_seed = NULL, name = "domain",
                                   choose_by = c("silhouette", "stability"))
    standardGeneric("findDomains"))
