## The analyses beyond domains from R: pseudotime, label transfer, the number of domains by stability. The
## embeddings are made here from the planted layers (no training): these tests check the doors; the Python tests
## check the methods on learned embeddings.

## Layers as directions (cosine similarity tells them apart) along one arc (so the neighbour graph joins them).
layer_embedding <- function(truth, seed) {
    set.seed(seed)
    angle <- 0.6 * as.integer(truth) + stats::rnorm(length(truth), sd = 0.15)
    cbind(cos(angle), sin(angle))
}

## PCA of log-normalised counts averaged over each spot and its 6 nearest spots (the smoothed-PCA baseline).
smoothed_pca <- function(sce) {
    counts <- as.matrix(SummarizedExperiment::assay(sce, "counts"))
    logged <- log1p(t(t(counts) / colSums(counts)) * 1e4)
    pcs <- stats::prcomp(t(logged[order(-apply(logged, 1, stats::var))[1:500], ]), rank. = 10)$x
    neighbours <- spatialdomains:::.nearest_other_spots(SingleCellExperiment::reducedDim(sce, "spatial"), 6L)
    smoothed <- pcs
    for (j in seq_len(ncol(neighbours))) smoothed <- smoothed + pcs[neighbours[, j], ]
    smoothed / 7
}

test_that("runPseudotime orders the planted layers from the root domain, for SCE and Seurat", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
    embedding <- smoothed_pca(sce)
    embedding[1:3, ] <- NA
    SingleCellExperiment::reducedDim(sce, "Toy") <- embedding
    sce <- runPseudotime(sce, dimred = "Toy", root_domain = "D1", domain = "ground_truth")
    expect_true(all(is.na(sce$pseudotime[1:3])))
    expect_gt(stats::cor(sce$pseudotime, as.integer(sce$ground_truth), method = "spearman",
                         use = "complete.obs"), 0.8)
    record <- S4Vectors::metadata(sce)$spatialdomains$pseudotime
    expect_match(record$root_chosen_by, "domain 'D1'")
    expect_identical(as.character(sce$ground_truth[colnames(sce) == record$root_spot]), "D1")
    expect_error(runPseudotime(sce, dimred = "Toy", root_domain = "D9", domain = "ground_truth"),
                 "root_domain = \"D9\" is not a value")
    expect_error(runPseudotime(sce, dimred = "Nothing"), "reducedDim 'Nothing' does not exist")

    skip_if_not_installed("SeuratObject")
    seu <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1, class = "Seurat")
    rownames(embedding) <- colnames(seu)
    colnames(embedding) <- paste0("TOY_", seq_len(ncol(embedding)))
    seu[["toy"]] <- SeuratObject::CreateDimReducObject(embeddings = embedding, key = "TOY_", assay = "Spatial")
    seu <- runPseudotime(seu, reduction = "toy", root_domain = "D3", domain = "ground_truth", name = "pt")
    expect_lt(stats::cor(seu$pt, as.integer(seu$ground_truth), method = "spearman", use = "complete.obs"), -0.8)
    expect_identical(methods::slot(seu, "misc")$spatialdomains$pseudotime$column, "pt")
})

test_that("transferLabels moves the reference's layers onto the query and scores them", {
    skip_without_spatialdomains()
    reference <- simulateVisium(n_spots = 400, n_domains = 3, seed = 1)
    query <- simulateVisium(n_spots = 350, n_domains = 3, seed = 2)  # another tissue: other spots, other layers
    SingleCellExperiment::reducedDim(reference, "Joint") <- layer_embedding(reference$ground_truth, 1)
    SingleCellExperiment::reducedDim(query, "Joint") <- layer_embedding(query$ground_truth, 2)
    reference$ground_truth[1:5] <- NA  # unannotated reference spots: no label to give, never the text "NA"
    query <- transferLabels(reference, query, label = "ground_truth", dimred = "Joint", spatial_smoothing = FALSE)
    expect_false("NA" %in% levels(query$ground_truth_transferred))
    expect_identical(levels(query$ground_truth_transferred), levels(reference$ground_truth))
    expect_s3_class(query$ground_truth_transferred, "factor")
    expect_lt(sum(is.na(query$ground_truth_transferred)), 10)  # only spots matched to an unannotated one
    expect_gt(mean(as.character(query$ground_truth_transferred) == as.character(query$ground_truth), na.rm = TRUE),
              0.9)
    expect_true(all(query$ground_truth_transferred_confidence >= 0 & query$ground_truth_transferred_confidence <= 1))
    expect_true(all(query$ground_truth_transferred_reference_spot %in% colnames(reference)))
    record <- S4Vectors::metadata(query)$spatialdomains$transfer_labels
    expect_gt(record$scores$ari, 0.8)
    expect_error(transferLabels(reference, query, label = "layer", dimred = "Joint"), "no column 'layer'")
    expect_error(transferLabels(reference, as.matrix(1), label = "ground_truth"), "both be SingleCellExperiment")
})

test_that("clusterEmbedding chooses the number of domains by stability", {
    skip_without_spatialdomains()
    set.seed(3)
    centres <- rbind(c(0, 0), c(6, 0), c(0, 6))
    embedding <- centres[rep(1:3, each = 80), ] + matrix(stats::rnorm(480), ncol = 2)
    fit <- clusterEmbedding(embedding, n_domains_range = 2:6, method = "kmeans", choose_by = "stability",
                            refine = FALSE)
    expect_identical(fit$n_domains, 3L)
    expect_identical(names(fit$stability), as.character(2:6))
    expect_identical(fit$record$n_domains_chosen_by, "stability")
    expect_error(clusterEmbedding(embedding, choose_by = "gap"), "should be one of")
})

test_that("runSTAIG keeps its encoder output too, and runPseudotime runs on it", {
    skip_without_spatialdomains()
    sce <- runSTAIG(simulateVisium(n_spots = 300, n_domains = 3, seed = 2), n_epochs = 3, seed = 1)
    expect_true(all(c("STAIG", "STAIG_encoder") %in% SingleCellExperiment::reducedDimNames(sce)))
    sce <- runPseudotime(sce, dimred = "STAIG_encoder")
    expect_identical(S4Vectors::metadata(sce)$spatialdomains$pseudotime$embedding, "STAIG_encoder")
    skip_if_not_installed("SeuratObject")
    seu <- runSTAIG(simulateVisium(n_spots = 300, n_domains = 3, seed = 2, class = "Seurat"), n_epochs = 3)
    expect_true(all(c("staig", "staig_encoder") %in% SeuratObject::Reductions(seu)))
    seu <- runPseudotime(seu, reduction = "staig_encoder")
    expect_false(anyNA(seu$pseudotime))
})

test_that("compareConditions finds a change planted in one domain of the disease slices", {
    skip_without_spatialdomains()
    parts <- lapply(1:4, function(i) {
        sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 5)[1:200, ]
        counts <- as.matrix(SummarizedExperiment::assay(sce, "counts"))
        set.seed(i)
        counts <- matrix(stats::rpois(length(counts), counts + 0.5), nrow(counts), dimnames = dimnames(counts))
        disease <- i > 2
        if (disease) {
            rows <- sce$ground_truth == "D2"
            counts[1:10, rows] <- counts[1:10, rows] * 4
        }
        SummarizedExperiment::assay(sce, "counts") <- methods::as(counts, "CsparseMatrix")
        colnames(sce) <- paste0("s", i, "_", colnames(sce))
        sce$sample_id <- paste0("s", i)
        sce$condition <- if (disease) "disease" else "control"
        sce
    })
    sce <- do.call(SummarizedExperiment::cbind, parts)
    sce <- compareConditions(sce, condition = "condition", domain = "ground_truth", reference = "control")
    result <- S4Vectors::metadata(sce)$spatialdomains$compare_conditions
    expect_s3_class(result$genes, "data.frame")
    found <- result$genes[result$genes$padj < 0.05 & result$genes$log2fc > 0, ]
    expect_true(all(found$domain == "D2"))
    expect_true(all(rownames(sce)[1:10] %in% found$gene))
    expect_match(unique(result$genes$test), "pseudobulk")
    expect_identical(nrow(result$shares), 4L)
    expect_error(compareConditions(sce, condition = "treatment", domain = "ground_truth"), "no column 'treatment'")
})

test_that("imputeExpression keeps Spotscape's denoised expression as an altExp (Seurat: an assay)", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 2)
    before <- SummarizedExperiment::assay(sce, "counts")
    sce <- imputeExpression(sce, n_epochs = 3, n_top_genes = 100, seed = 1, progress = FALSE)
    denoised <- SingleCellExperiment::altExp(sce, "Spotscape_denoised")
    expect_identical(dim(denoised), c(100L, ncol(sce)))
    expect_true(all(rownames(denoised) %in% rownames(sce)))
    expect_true(all(SummarizedExperiment::assay(denoised, "logcounts") >= 0))
    expect_identical(SummarizedExperiment::assay(sce, "counts"), before)
    expect_true("Spotscape" %in% SingleCellExperiment::reducedDimNames(sce))
    skip_if_not_installed("SeuratObject")
    seu <- imputeExpression(simulateVisium(n_spots = 300, n_domains = 3, seed = 2, class = "Seurat"), n_epochs = 3,
                            n_top_genes = 100, progress = FALSE)
    expect_true(all(c("SPOTSCAPE") %in% SeuratObject::Assays(seu)))
    expect_identical(dim(SeuratObject::GetAssayData(seu, assay = "SPOTSCAPE", slot = "data")), c(100L, ncol(seu)))
})

test_that("imputeExpression(method = 'spami') keeps one modality's reconstruction; ATAC is refused", {
    skip_without_spatialdomains()
    sce <- simulateMultiomics(n_spots = 300, n_domains = 3, seed = 2)
    before <- sce
    sce <- imputeExpression(sce, method = "spami", modality = "adt", n_epochs = 5, seed = 1, progress = FALSE)
    denoised <- SingleCellExperiment::altExp(sce, "SpaMI_denoised")
    expect_identical(rownames(denoised), rownames(SingleCellExperiment::altExp(before, "adt")))
    expect_true(all(SummarizedExperiment::assay(denoised, "logcounts") >= 0))
    expect_identical(dim(SingleCellExperiment::reducedDim(sce, "SpaMI")), c(ncol(sce), 64L))
    expect_identical(SingleCellExperiment::altExp(sce, "adt"), SingleCellExperiment::altExp(before, "adt"))
    expect_identical(S4Vectors::metadata(sce)$spatialdomains$SpaMI_denoised$impute$modality, "adt")
    # The denoised altExp is not taken for a second modality by a later run.
    expect_true("SpaMI_adt" %in% SingleCellExperiment::reducedDimNames(runSpaMI(sce, n_epochs = 2, progress = FALSE)))
    rna <- imputeExpression(before, method = "spami", n_epochs = 5, seed = 1, progress = FALSE)
    expect_true(all(rownames(SingleCellExperiment::altExp(rna, "SpaMI_denoised")) %in% rownames(before)))
    expect_error(imputeExpression(before, method = "spami", modality = "protein", n_epochs = 2),
                 "\"protein\" is not a modality here")
    atac <- simulateMultiomics(n_spots = 300, n_domains = 3, second = "atac", seed = 2)
    expect_error(imputeExpression(atac, method = "spami", modality = "atac", n_epochs = 2), "does not map back to peaks")
    skip_if_not_installed("SeuratObject")
    seu <- imputeExpression(simulateMultiomics(n_spots = 300, n_domains = 3, seed = 2, class = "Seurat"),
                            method = "spami", spatial_coords = c("x", "y"), n_epochs = 5, progress = FALSE)
    expect_true(all(c("SPAMI") %in% SeuratObject::Assays(seu)))
    expect_true("spami" %in% SeuratObject::Reductions(seu))
})

test_that("runSpotscape with several learning rates keeps the run of best silhouette and records the scores", {
    skip_without_spatialdomains()
    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 2)
    sce <- runSpotscape(sce, learning_rate = c(1e-4, 1e-3), n_domains = 3, n_epochs = 5, n_top_genes = 100,
                        seed = 1, progress = FALSE)
    record <- S4Vectors::metadata(sce)$spatialdomains$Spotscape
    scores <- unlist(record$learning_rate_selection$silhouette_by_learning_rate)
    expect_setequal(as.numeric(names(scores)), c(1e-4, 1e-3))
    expect_equal(record$learning_rate_selection$chosen, as.numeric(names(scores)[which.max(scores)]))
    expect_equal(record$parameters$learning_rate, record$learning_rate_selection$chosen)
    expect_identical(dim(SingleCellExperiment::reducedDim(sce, "Spotscape")), c(ncol(sce), 64L))
})
