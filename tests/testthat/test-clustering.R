test_that("refineDomains follows the majority and breaks ties as documented", {
    coordinates <- cbind(x = c(0, 1, 2, 10, 11), y = 0)
    # Spot 1's two nearest are spots 2 and 3: labels 2 and 3 tie, its own label is not among them -> the smallest.
    # Spot 2: spots 1 and 3 (both at distance 1) -> 1. Spot 3: spots 2 and 1 -> 1. Spots 4 and 5: each other and
    # spot 3 -> labels 4 and 3 tie, the own label 4 is among them and is kept.
    labels <- c(1L, 2L, 3L, 4L, 4L)
    expect_identical(refineDomains(labels, coordinates, n_neighbors = 2), c(2L, 1L, 1L, 4L, 4L))
    # An isolated minority label is replaced; the own label wins a tie.
    grid <- as.matrix(expand.grid(x = 1:6, y = 1:6))
    labels <- ifelse(grid[, "x"] <= 3, 1L, 2L)
    labels[8] <- 2L
    refined <- refineDomains(labels, grid, n_neighbors = 4)
    expect_identical(refined[8], 1L)
    expect_identical(refined[-8], labels[-8])
    expect_error(refineDomains(1:3, grid), "one value per row")
})

test_that("nearest spots are ordered by distance, then by index", {
    grid <- as.matrix(expand.grid(x = 1:5, y = 1:5))
    centre <- which(grid[, "x"] == 3 & grid[, "y"] == 3)
    nearest <- spatialdomains:::.nearest_other_spots(grid, 6)
    # Four at distance 1 in index order, then the two diagonal spots with the lowest indices.
    expect_identical(nearest[centre, ], c(8L, 12L, 14L, 18L, 7L, 9L))
    expect_false(any(nearest == seq_len(nrow(grid))))
})

test_that("mean silhouette equals the definition on a small case", {
    x <- cbind(c(0, 1, 10, 11, 30), c(0, 0, 0, 0, 0))
    labels <- c(1L, 1L, 2L, 2L, 3L)
    d <- as.matrix(dist(x))
    expected <- vapply(seq_len(nrow(x)), function(i) {
        own <- labels == labels[i]
        if (sum(own) == 1) return(0)
        a <- sum(d[i, own]) / (sum(own) - 1)
        b <- min(vapply(setdiff(unique(labels), labels[i]), function(l) mean(d[i, labels == l]), 0))
        (b - a) / max(a, b)
    }, 0)
    expect_equal(spatialdomains:::.mean_silhouette(x, labels, block = 2L), mean(expected), tolerance = 1e-12)
})

test_that("clusterEmbedding finds separated groups and chooses their number", {
    generator <- function(seed) withr::with_seed(seed, rbind(
        matrix(rnorm(200, 0), ncol = 2), matrix(rnorm(200, 8), ncol = 2), matrix(rnorm(200, -8), ncol = 2)))
    x <- generator(1)
    truth <- rep(1:3, each = 100)
    fit <- clusterEmbedding(x, n_domains = 3, refine = FALSE)
    expect_s3_class(fit$domain, "factor")
    expect_identical(levels(fit$domain), c("1", "2", "3"))
    overlap <- table(fit$domain, truth) > 0
    expect_true(all(rowSums(overlap) == 1L) && all(colSums(overlap) == 1L))
    chosen <- clusterEmbedding(x, n_domains = NULL, n_domains_range = 2:5, refine = FALSE)
    expect_identical(chosen$n_domains, 3L)
    expect_identical(names(chosen$silhouette), as.character(2:5))
    expect_identical(which.max(chosen$silhouette), c(`3` = 2L))
    # Missing rows (spots a model left out) get NA domains; the others are clustered as before.
    x[5, ] <- NA
    with_missing <- clusterEmbedding(x, n_domains = 3, refine = FALSE)
    expect_true(is.na(with_missing$domain[5]))
    expect_identical(sum(is.na(with_missing$domain)), 1L)
})

test_that("clusterEmbedding leaves the session's random stream alone and is reproducible", {
    x <- withr::with_seed(2, matrix(rnorm(400), ncol = 2))
    set.seed(99)
    before <- .Random.seed
    first <- clusterEmbedding(x, n_domains = 3, refine = FALSE, seed = 5)
    expect_identical(.Random.seed, before)
    second <- clusterEmbedding(x, n_domains = 3, refine = FALSE, seed = 5)
    expect_identical(first$domain, second$domain)
})

test_that("refine = 'auto' refines lattices only", {
    lattice <- as.matrix(expand.grid(x = 1:15, y = 1:15))
    x <- cbind(lattice[, "x"] > 7, 0) + withr::with_seed(1, matrix(rnorm(2 * nrow(lattice), sd = 0.05), ncol = 2))
    on_lattice <- clusterEmbedding(x, n_domains = 2, coordinates = lattice)
    expect_true(on_lattice$record$refined)
    expect_s3_class(on_lattice$unrefined, "factor")
    scattered <- withr::with_seed(3, matrix(runif(2 * nrow(lattice), 0, 15), ncol = 2))
    off_lattice <- clusterEmbedding(x, n_domains = 2, coordinates = scattered)
    expect_false(off_lattice$record$refined)
    expect_null(off_lattice$unrefined)
})

test_that("bad clustering input gets a message naming the argument", {
    x <- matrix(rnorm(40), ncol = 2)
    expect_error(clusterEmbedding(x, n_domains = 1), "'n_domains' must be between 2")
    expect_error(clusterEmbedding(x, n_domains = 2.5), "'n_domains' must be one whole number")
    expect_error(clusterEmbedding(x, n_domains = 2, refine = TRUE), "refinement needs 'coordinates'")
    expect_error(clusterEmbedding(letters, 2), "'embedding' must be a numeric matrix")
})

test_that("k-means is available, and is the fallback when mclust finds no fit", {
    x <- withr::with_seed(4, rbind(matrix(rnorm(100, 0), ncol = 2), matrix(rnorm(100, 6), ncol = 2)))
    fit <- clusterEmbedding(x, n_domains = 2, refine = FALSE, method = "kmeans")
    expect_identical(fit$record$backend, "kmeans")
    expect_identical(sort(as.vector(table(fit$domain))), c(50L, 50L))
    degenerate <- cbind(x[, 1], 0)  # a constant column: EEE's covariance is singular
    expect_warning(fallback <- clusterEmbedding(degenerate, n_domains = 2, refine = FALSE),
                   "clustering with k-means instead")
    expect_identical(fallback$record$backend, "kmeans")
})

test_that("mclust starts from a random subset, fits a sample above the fitting size, and records both", {
    skip_if_not_installed("mclust")
    set.seed(11)
    centres <- matrix(rnorm(4 * 6, sd = 6), 4)
    truth <- sample(4, 3000, replace = TRUE)
    x <- centres[truth, ] + matrix(rnorm(3000 * 6), 3000)
    fit <- clusterEmbedding(x, n_domains = 4, refine = FALSE)
    expect_identical(fit$record$initialisation, "hierarchical, on a random subset of 2000 spots")
    expect_equal(mclust::adjustedRandIndex(fit$domain, truth), 1)
    expect_identical(fit$record$fitted_on, "every spot")
    small <- clusterEmbedding(x[1:500, ], n_domains = 4, refine = FALSE)
    expect_identical(small$record$initialisation, "hierarchical, on every spot")
    # above the fitting size: a fit on a sample, every spot assigned by mclust's predict, same partition
    sampled <- spatialdomains:::.mclust_labels(x, 4L, 2023L, fit_spots = 1000L)
    expect_equal(mclust::adjustedRandIndex(sampled, fit$domain), 1)
    expect_identical(spatialdomains:::.mclust_labels(x, 4L, 2023L, fit_spots = 1000L), sampled)
    record <- spatialdomains:::.mclust_record(60000L)
    expect_identical(record$fitted_on, "a random sample of 50,000 of the 60,000 spots")
    expect_match(record$assigned_by, "predict")
})
