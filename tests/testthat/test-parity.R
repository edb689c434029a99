## The R (clusterEmbedding) and Python (sd.tl.cluster) paths must give the same
## domains for the same embedding and seed: mclust EEE with the same seed, the
## same refinement neighbours and the same choice of the number of domains.
python_domains <- function(embedding, coordinates, n_domains) {
    files <- c(tempfile(), tempfile())
    writeBin(as.vector(embedding), files[1], endian = "little")
    writeBin(as.vector(coordinates), files[2], endian = "little")
    code <- c(
        "import sys, numpy as np, anndata as ad, spatialdomains as sd",
        "n, d, k = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]",
        "embedding = np.fromfile(sys.argv[1], dtype='<f8').reshape(d, n).T",
        "coordinates = np.fromfile(sys.argv[2], dtype='<f8').reshape(2, n).T",
        "adata = ad.AnnData(np.zeros((n, 1), dtype=np.float32))",
        "adata.obsm['X'] = embedding",
        "adata.obsm['spatial'] = coordinates",
        "sd.tl.cluster(adata, use_rep='X', method='mclust', n_domains=None if k == 'auto' else int(k), n_domains_range=(2, 6))",
        "print('DOMAINS', ' '.join(adata.obs['domain'].astype(str)))",
        "print('UNREFINED', ' '.join(adata.obs['domain_unrefined'].astype(str)))")
    output <- run_python(code, files[1], files[2], nrow(embedding), ncol(embedding), n_domains)
    parse <- function(tag) strsplit(sub(paste0("^", tag, " "), "", grep(paste0("^", tag, " "), output, value = TRUE)),
                                    " ")[[1]]
    list(domain = parse("DOMAINS"), unrefined = parse("UNREFINED"))
}

test_that("R-side and Python-side mclust give identical domains on one embedding", {
    skip_without_spatialdomains()
    skip_if_not(reticulate::py_module_available("rpy2"), "needs rpy2 in the Python for Python-side mclust")
    sce <- small_sample()
    embedding <- SingleCellExperiment::reducedDim(sce, "STAIG")
    coordinates <- SingleCellExperiment::reducedDim(sce, "spatial")
    for (k in c("3", "auto")) {
        in_r <- clusterEmbedding(embedding, if (k == "auto") NULL else 3L, coordinates = coordinates,
                                 n_domains_range = 2:6)
        in_python <- python_domains(embedding, coordinates, k)
        expect_identical(as.character(in_r$domain), in_python$domain)
        expect_identical(as.character(in_r$unrefined), in_python$unrefined)
    }
})

test_that("above the sample size, R and Python fit mclust on the same sample and assign every spot alike", {
    skip_without_spatialdomains()
    skip_if_not(reticulate::py_module_available("rpy2"), "needs rpy2 in the Python for Python-side mclust")
    set.seed(3)
    centres <- matrix(c(0, 0, 1.5, 0, 0, 1.5), ncol = 2, byrow = TRUE)  # overlapping: the sample shifts the fit
    x <- centres[rep(1:3, length.out = 1200), ] + matrix(stats::rnorm(2400), ncol = 2)
    fit_spots <- 300L
    sampled <- spatialdomains:::.mclust_labels(x, 3L, seed = 7L, fit_spots = fit_spots)
    every <- spatialdomains:::.mclust_labels(x, 3L, seed = 7L, fit_spots = nrow(x))
    expect_false(identical(sampled, every))  # so agreeing below means Python fitted the same sample
    file <- tempfile()
    writeBin(as.vector(x), file, endian = "little")
    output <- run_python(c(
        "import sys, numpy as np",
        "from spatialdomains import cluster",
        "cluster.FIT_SPOTS = int(sys.argv[2])",
        "x = np.fromfile(sys.argv[1], dtype='<f8').reshape(2, -1).T",
        "print('LABELS', ' '.join(str(label + 1) for label in cluster.mclust(x, 3, random_state=7)))"),
        file, fit_spots)
    in_python <- as.integer(strsplit(sub("^LABELS ", "", grep("^LABELS ", output, value = TRUE)), " ")[[1]])
    expect_identical(sampled, in_python)
})
