## findDomains() on a SingleCellExperiment built from DLPFC 151673 against the
## Python run (sd.find_domains) on the same file. make test trains 10 epochs and
## checks that both doors agree; make accuracy (SPATIALDOMAINS_ACCURACY=1) trains
## the default 400 and asserts the accuracy floor too.
test_that("DLPFC 151673: findDomains in R recovers the ARI of the Python run", {
    skip_without_spatialdomains()
    skip_if_not(reticulate::py_module_available("rpy2"), "needs rpy2 in the Python for the Python-side run")
    path <- shared_file("data", "dlpfc_151673", "dlpfc_151673.h5ad")
    data <- reticulate::py_run_string(paste(sep = "\n",
        "import anndata, numpy, scipy.sparse",
        sprintf("adata = anndata.read_h5ad(%s)", encodeString(normalizePath(path), quote = "\"")),
        "counts = scipy.sparse.csc_matrix(adata.X.T, dtype=numpy.float64)",
        "i, p, x, dim = counts.indices, counts.indptr, counts.data, list(counts.shape)",
        "genes, spots = adata.var_names.tolist(), adata.obs_names.tolist()",
        "layer = adata.obs['layer_guess_reordered'].astype(str).tolist()",
        "xy = numpy.asarray(adata.obsm['spatial'], dtype=numpy.float64)"),
        local = TRUE, convert = TRUE)
    sce <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = methods::new("dgCMatrix", i = as.integer(data$i), p = as.integer(data$p), x = as.numeric(data$x),
                                            Dim = as.integer(unlist(data$dim)),
                                            Dimnames = list(unlist(data$genes), unlist(data$spots)))),
        colData = S4Vectors::DataFrame(layer = unlist(data$layer)),
        reducedDims = list(spatial = data$xy))
    full <- nzchar(Sys.getenv("SPATIALDOMAINS_ACCURACY"))
    epochs <- if (full) 400L else 10L
    sce <- findDomains(sce, n_domains = 7, seed = 0, n_epochs = epochs)
    labelled <- sce$layer != "nan"
    ari_r <- mclust::adjustedRandIndex(sce$domain[labelled], sce$layer[labelled])

    output <- run_python(c(
        "import sys, anndata as ad, spatialdomains as sd",
        "adata = ad.read_h5ad(sys.argv[1])",
        sprintf("sd.find_domains(adata, n_domains=7, random_state=0, n_epochs=%d, progress=False)", epochs),
        "truth = adata.obs['layer_guess_reordered']",
        "print('ARI', sd.metrics.ari(truth, adata.obs['domain']))"), path)
    ari_python <- as.numeric(sub("^ARI ", "", grep("^ARI ", output, value = TRUE)))
    message(sprintf("DLPFC 151673 ARI after %d epochs: R findDomains %.3f, Python find_domains %.3f", epochs, ari_r,
                    ari_python))
    expect_lt(abs(ari_r - ari_python), 0.03)
    if (full) {
        expect_gt(ari_r, 0.40)
    }
})
