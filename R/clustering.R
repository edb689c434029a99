#' Cluster an embedding into spatial domains with mclust
#'
#' Fits \code{mclust::Mclust(embedding, G = n_domains, modelNames = "EEE")} in R,
#' the clustering the STAIG paper uses, then optionally refines the labels by a
#' majority vote over the nearest spots. This is the R twin of the Python
#' package's \code{sd.tl.cluster(method = "mclust")}: for the same embedding and
#' seed both give the same domains.
#'
#' @param embedding Numeric matrix, spots x dimensions. Rows with missing values
#'   (spots the model left out) get \code{NA} domains.
#' @param n_domains Number of domains. \code{NULL} chooses it from
#'   \code{n_domains_range} by \code{choose_by}.
#' @param choose_by \code{"silhouette"}: every number is fitted and the one
#'   with the highest mean silhouette (Euclidean, in the embedding; on a
#'   random sample of 10,000 spots above that) is kept. \code{"stability"}:
#'   the most detailed partition that k-means reproduces on subsamples (10
#'   subsamples of 80\% of the spots, at most 10,000; mean pairwise ARI; the
#'   largest number within 0.005 of the best), computed in the Python
#'   package; then fitted once.
#' @param coordinates Numeric matrix of spot coordinates (spots x 2), needed
#'   for refinement.
#' @param refine \code{TRUE}, \code{FALSE} or \code{"auto"}: refine on regular
#'   lattices (Visium, ST) only, i.e. when at least 90\% of nearest-neighbour
#'   distances lie within 5\% of their median.
#' @param n_domains_range Candidate numbers of domains when \code{n_domains} is
#'   \code{NULL}.
#' @param refine_neighbors Number of nearest spots that vote in the refinement.
#' @param seed Seed of the random number generator while mclust or k-means
#'   runs (mclust draws a random subset of spots to initialise large data
#'   sets, and above 50,000 spots fits a random sample of 50,000 and assigns
#'   every spot with \code{predict}, so a million cells cluster in minutes). The
#'   generator is set for this call only; the session's stream is restored.
#' @param slices Optional slice label per spot (several slices clustered
#'   together): refinement then looks for neighbours within each spot's own
#'   slice, and \code{"auto"} refines when every slice is a lattice.
#' @param method \code{"mclust"} (EEE; when it finds no fit, k-means is used
#'   with a warning) or \code{"kmeans"} (10 starts; Spotscape's published
#'   protocol).
#' @return A list with \code{domain} (factor, levels \code{"1"}..\code{"K"}),
#'   \code{unrefined} (factor, or \code{NULL} when not refined),
#'   \code{n_domains}, \code{silhouette} or \code{stability} (named by number
#'   of domains, as chosen automatically) and \code{record} (the parameters and the backend
#'   used).
#' @examplesIf spatialdomainsAvailable()
#' sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
#' sce <- runSTAIG(sce, n_epochs = 20, seed = 1)
#' fit <- clusterEmbedding(SingleCellExperiment::reducedDim(sce, "STAIG"), 3,
#'     coordinates = SingleCellExperiment::reducedDim(sce, "spatial"))
#' table(fit$domain, sce$ground_truth)
#' @export
clusterEmbedding <- function(embedding, n_domains = NULL, coordinates = NULL, refine = "auto",
                             n_domains_range = 2:15, refine_neighbors = 15L, seed = 2023L,
                             method = c("mclust", "kmeans"), slices = NULL,
                             choose_by = c("silhouette", "stability")) {
    method <- match.arg(method)
    choose_by <- match.arg(choose_by)
    embedding <- .as_numeric_matrix(embedding, "embedding")
    if (is.null(slices)) {
        slices <- rep("1", nrow(embedding))
    }
    if (length(slices) != nrow(embedding) || anyNA(slices)) {
        stop("'slices' must give a slice for every row of 'embedding'", call. = FALSE)
    }
    usable <- stats::complete.cases(embedding)
    if (sum(usable) < 3L) {
        stop("'embedding' has fewer than 3 rows without missing values", call. = FALSE)
    }
    x <- embedding[usable, , drop = FALSE]
    if (is.null(n_domains)) {
        candidates <- as.integer(n_domains_range)
        candidates <- candidates[candidates >= 2L & candidates < nrow(x)]
        if (length(candidates) == 0L) {
            stop("'n_domains_range' holds no number between 2 and the number of spots - 1", call. = FALSE)
        }
        chosen <- if (choose_by == "stability") .by_stability(x, candidates, seed, method) else
            .by_silhouette(x, candidates, seed, method)
        labels <- chosen$labels
        n_domains <- chosen$n_domains
        scores <- chosen$scores
        chosen_by <- choose_by
    } else {
        n_domains <- .count_argument(n_domains, "n_domains")
        if (n_domains < 2L || n_domains >= nrow(x)) {
            stop("'n_domains' must be between 2 and the number of spots - 1", call. = FALSE)
        }
        labels <- .cluster_labels(x, n_domains, seed, method)
        scores <- NULL
        chosen_by <- "user"
    }
    backend <- attr(labels, "backend")
    groups <- split(seq_len(sum(usable)), as.character(slices)[usable])
    if (identical(refine, "auto")) {
        refine <- !is.null(coordinates) && all(vapply(groups, function(rows) {
            .is_lattice(.as_numeric_matrix(coordinates, "coordinates")[usable, , drop = FALSE][rows, , drop = FALSE])
        }, logical(1)))
    }
    if (!is.logical(refine) || length(refine) != 1L || is.na(refine)) {
        stop("'refine' must be TRUE, FALSE or \"auto\"", call. = FALSE)
    }
    unrefined <- NULL
    if (refine) {
        if (is.null(coordinates)) {
            stop("refinement needs 'coordinates' (spots x 2); give them or set refine = FALSE", call. = FALSE)
        }
        coordinates <- .as_numeric_matrix(coordinates, "coordinates")
        if (nrow(coordinates) != nrow(embedding)) {
            stop("'coordinates' must have one row per row of 'embedding'", call. = FALSE)
        }
        unrefined <- .domain_factor(labels, usable)
        kept <- coordinates[usable, , drop = FALSE]
        refined <- labels
        for (rows in groups) {
            refined[rows] <- refineDomains(labels[rows], kept[rows, , drop = FALSE], refine_neighbors)
        }
        labels <- refined
    }
    list(domain = .domain_factor(labels, usable), unrefined = unrefined, n_domains = n_domains,
         silhouette = if (identical(chosen_by, "silhouette")) scores,
         stability = if (identical(chosen_by, "stability")) scores,
         record = c(list(backend = backend, model = if (backend == "mclust") "EEE"),
                    if (backend == "mclust") .mclust_record(nrow(x)), list(
                       n_domains = n_domains,
                       n_domains_chosen_by = chosen_by, refined = refine,
                       refine_neighbors = if (refine) as.integer(refine_neighbors) else NULL,
                       seed = as.integer(seed),
                       versions = list(mclust = as.character(utils::packageVersion("mclust")),
                                       spatialdomains = as.character(utils::packageVersion("spatialdomains"))))))
}

## Every candidate fitted; the one of highest mean silhouette kept.
.by_silhouette <- function(x, candidates, seed, method) {
    sample_rows <- .silhouette_sample(nrow(x), seed)
    fits <- lapply(candidates, function(k) .cluster_labels(x, k, seed, method))
    scores <- vapply(fits, function(labels) {
        if (length(unique(labels)) < 2L) NA_real_ else .mean_silhouette(x[sample_rows, , drop = FALSE],
                                                                         labels[sample_rows])
    }, numeric(1))
    names(scores) <- candidates
    if (all(is.na(scores))) {
        stop("every candidate clustering produced a single domain; give 'n_domains' explicitly", call. = FALSE)
    }
    best <- which.max(scores)
    list(labels = fits[[best]], n_domains = candidates[best], scores = scores)
}

## The stability of each candidate from the Python package (one implementation of the rule), then one fit.
.by_stability <- function(x, candidates, seed, method) {
    stable <- .bridge()$stability(x, candidates, random_state = .count_argument(seed, "seed"), console = .console)
    n_domains <- as.integer(stable$best)
    list(labels = .cluster_labels(x, n_domains, seed, method), n_domains = n_domains, scores = unlist(stable$scores))
}

#' Refine domain labels by a majority vote of the nearest spots
#'
#' Each spot takes the label most frequent among its \code{n_neighbors}
#' nearest other spots. Ties keep the spot's own label when it is among the
#' tied ones, otherwise take the smallest label. Neighbours are ordered by
#' distance, then by spot index, so ties at equal distance (common on Visium
#' lattices) are broken the same way as in the Python package.
#'
#' @param labels Integer (or integer-like) labels, one per spot.
#' @param coordinates Numeric matrix of spot coordinates, one row per spot.
#' @param n_neighbors Number of voting neighbours.
#' @return Refined labels, of the same type as \code{labels}.
#' @examples
#' coordinates <- as.matrix(expand.grid(x = 1:10, y = 1:10))
#' labels <- ifelse(coordinates[, "x"] <= 5, 1L, 2L)
#' labels[c(3, 77)] <- 3L
#' table(refineDomains(labels, coordinates, n_neighbors = 8))
#' @export
refineDomains <- function(labels, coordinates, n_neighbors = 15L) {
    coordinates <- .as_numeric_matrix(coordinates, "coordinates")
    if (length(labels) != nrow(coordinates)) {
        stop("'labels' must have one value per row of 'coordinates'", call. = FALSE)
    }
    codes <- sort(unique(labels))
    encoded <- match(labels, codes)
    n <- length(encoded)
    k <- min(.count_argument(n_neighbors, "n_neighbors"), n - 1L)
    if (k < 1L) {
        return(labels)
    }
    neighbours <- .nearest_other_spots(coordinates, k)
    votes <- matrix(0L, n, length(codes))
    voted <- cbind(rep(seq_len(n), times = k), encoded[as.vector(neighbours)])
    counts <- table(factor(voted[, 1], levels = seq_len(n)), factor(voted[, 2], levels = seq_along(codes)))
    votes[] <- as.integer(counts)
    top <- apply(votes, 1L, max)
    own_is_top <- votes[cbind(seq_len(n), encoded)] == top
    first_top <- max.col(votes == top, ties.method = "first")
    codes[ifelse(own_is_top, encoded, first_top)]
}

## Labels 1..K with the backend that produced them: mclust EEE, or k-means
## (10 starts) when asked for or when mclust finds no fit (with a warning).
.cluster_labels <- function(x, n_domains, seed, method) {
    labels <- if (method == "mclust") .mclust_labels(x, n_domains, seed) else NULL
    backend <- "mclust"
    if (is.null(labels)) {
        backend <- "kmeans"
        fit <- withr::with_seed(seed, stats::kmeans(x, centers = n_domains, nstart = 10L, iter.max = 100L),
                                .rng_kind = "Mersenne-Twister", .rng_normal_kind = "Inversion",
                                .rng_sample_kind = "Rejection")
        labels <- match(fit$cluster, sort(unique(fit$cluster)))
    }
    structure(labels, backend = backend)
}

## mclust EEE with the session's random stream set to 'seed' for this call only
## (R's default generators, as a fresh R session has them, so that the Python
## side, which calls mclust through rpy2, draws the same numbers).
## Above .MCLUST_INIT_SPOTS spots the hierarchical initialisation (quadratic in
## the spots) runs on a random subset, as in the Python package (and as
## mclust >= 5.4 does by default); EM then runs on every fitted spot.
## Above .FIT_SPOTS spots the model is fitted on a random sample of that size
## and every spot is assigned by mclust's predict (one E-step), so a million
## cells cost one bounded fit and one linear pass.
.MCLUST_INIT_SPOTS <- 2000L
.FIT_SPOTS <- 50000L

.mclust_labels <- function(x, n_domains, seed, fit_spots = .FIT_SPOTS) {
    fit <- withr::with_seed(seed, {
        fitted <- if (nrow(x) > fit_spots) x[sort(sample.int(nrow(x), fit_spots)), , drop = FALSE] else x
        tryCatch(if (nrow(fitted) > .MCLUST_INIT_SPOTS) {
                     Mclust(fitted, G = n_domains, modelNames = "EEE", verbose = FALSE,
                            initialization = list(subset = sample(seq.int(nrow(fitted)), size = .MCLUST_INIT_SPOTS)))
                 } else Mclust(fitted, G = n_domains, modelNames = "EEE", verbose = FALSE),
                 error = function(e) conditionMessage(e))
    }, .rng_kind = "Mersenne-Twister", .rng_normal_kind = "Inversion", .rng_sample_kind = "Rejection")
    if (is.null(fit) || is.character(fit)) {
        warning("mclust (EEE, ", n_domains, " domains) found no fit",
                if (is.character(fit)) paste0(" (", fit, ")"), "; clustering with k-means instead", call. = FALSE)
        return(NULL)
    }
    classification <- if (nrow(x) > fit_spots) stats::predict(fit, newdata = x)$classification else fit$classification
    match(classification, sort(unique(classification)))
}

## What the record says of the spots mclust was fitted on and how it started.
.mclust_record <- function(n_spots) {
    sampled <- n_spots > .FIT_SPOTS
    record <- list(initialisation = if (min(n_spots, .FIT_SPOTS) > .MCLUST_INIT_SPOTS) {
                       paste("hierarchical, on a random subset of", .MCLUST_INIT_SPOTS, "spots")
                   } else "hierarchical, on every spot",
                   fitted_on = if (sampled) {
                       sprintf("a random sample of %s of the %s spots", format(.FIT_SPOTS, big.mark = ","),
                               format(n_spots, big.mark = ","))
                   } else "every spot")
    if (sampled) {
        record$assigned_by <- "mclust's predict (one E-step)"
    }
    record
}

## Mean silhouette width (Euclidean), computed in blocks of rows so that no
## N x N distance matrix is held; clusters of one spot score 0.
.mean_silhouette <- function(x, labels, block = 1024L) {
    codes <- sort(unique(labels))
    member <- match(labels, codes)
    sizes <- tabulate(member, length(codes))
    indicator <- Matrix::sparseMatrix(i = seq_along(member), j = member, x = 1, dims = c(length(member),
                                                                                          length(codes)))
    squared_norms <- rowSums(x * x)
    widths <- numeric(nrow(x))
    for (start in seq(1L, nrow(x), by = block)) {
        rows <- start:min(start + block - 1L, nrow(x))
        squared <- outer(squared_norms[rows], squared_norms, "+") - 2 * tcrossprod(x[rows, , drop = FALSE], x)
        distances <- sqrt(pmax(squared, 0))
        distances[cbind(seq_along(rows), rows)] <- 0
        sums <- as.matrix(distances %*% indicator)
        own <- member[rows]
        own_sum <- sums[cbind(seq_along(rows), own)]
        within <- ifelse(sizes[own] > 1L, own_sum / pmax(sizes[own] - 1L, 1L), 0)
        means <- sweep(sums, 2L, sizes, "/")
        means[cbind(seq_along(rows), own)] <- Inf
        between <- apply(means, 1L, min)
        width <- (between - within) / pmax(within, between)
        width[sizes[own] == 1L | !is.finite(width)] <- 0
        widths[rows] <- width
    }
    mean(widths)
}

.silhouette_sample <- function(n, seed, size = 10000L) {
    if (n <= size) {
        return(seq_len(n))
    }
    sort(withr::with_seed(seed, sample.int(n, size)))
}

## The k nearest other spots of every spot, ordered by distance and then by
## index. Candidates come from a k-d tree (RANN); squared distances are
## recomputed exactly and the candidate set is widened where a tie could
## reach past it, as in the Python package's graph.nearest_other_spots().
.nearest_other_spots <- function(coordinates, k) {
    n <- nrow(coordinates)
    result <- matrix(NA_integer_, n, k)
    rows <- seq_len(n)
    n_candidates <- min(n, k + 9L)
    while (length(rows) > 0L) {
        candidates <- RANN::nn2(coordinates, coordinates[rows, , drop = FALSE], k = n_candidates)$nn.idx
        squared <- matrix(0, length(rows), n_candidates)
        for (dimension in seq_len(ncol(coordinates))) {
            difference <- matrix(coordinates[candidates, dimension], length(rows)) - coordinates[rows, dimension]
            squared <- squared + difference * difference
        }
        squared[candidates == rows] <- Inf
        order_all <- order(row(squared), squared, candidates)
        order_within <- matrix(order_all, length(rows), n_candidates, byrow = TRUE)
        nearest <- matrix(candidates[as.vector(order_within[, seq_len(k)])], length(rows))
        kth <- squared[order_within[, k]]
        finite <- squared
        finite[is.infinite(finite)] <- -Inf
        settled <- apply(finite, 1L, max) > kth | n_candidates == n
        result[rows[settled], ] <- nearest[settled, , drop = FALSE]
        rows <- rows[!settled]
        n_candidates <- min(n, 2L * n_candidates)
    }
    result
}

.is_lattice <- function(coordinates, tolerance = 0.05, fraction = 0.9) {
    if (nrow(coordinates) < 2L) {
        return(FALSE)
    }
    hits <- RANN::nn2(coordinates, k = 2L)
    self_first <- hits$nn.idx[, 1] == seq_len(nrow(coordinates))
    distances <- ifelse(self_first, hits$nn.dists[, 2], hits$nn.dists[, 1])
    centre <- stats::median(distances)
    centre > 0 && mean(abs(distances - centre) <= tolerance * centre) >= fraction
}

.domain_factor <- function(labels, usable) {
    domain <- rep(NA_integer_, length(usable))
    domain[usable] <- labels
    factor(domain, levels = sort(unique(labels)))
}

.as_numeric_matrix <- function(x, what) {
    x <- as.matrix(x)
    if (!is.numeric(x) || length(dim(x)) != 2L) {
        stop("'", what, "' must be a numeric matrix", call. = FALSE)
    }
    storage.mode(x) <- "double"
    x
}

.count_argument <- function(value, what) {
    if (!is.numeric(value) || length(value) != 1L || is.na(value) || value != round(value)) {
        stop("'", what, "' must be one whole number", call. = FALSE)
    }
    as.integer(value)
}
