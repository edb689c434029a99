## A method added to the Python registry (one module, no R edit) is offered and run by findDomains and
## imputeExpression: R reads the methods and what they can do from Python.
test_that("a method registered in Python is run by findDomains, domainReport and imputeExpression with no R edit", {
    skip_without_spatialdomains()
    expect_false("toy" %in% names(spatialdomains:::.method_info()))
    toy <- normalizePath(testthat::test_path("toy_spatial_method.py"))
    reticulate::py_run_string(paste(
        "import importlib.util, sys",
        sprintf("spec = importlib.util.spec_from_file_location('toy_spatial_method', r'%s')", toy),
        "module = sys.modules['toy_spatial_method'] = importlib.util.module_from_spec(spec)",
        "spec.loader.exec_module(module)",
        "from spatialdomains import methods",
        "methods.register(module.Toy())", sep = "\n"))
    on.exit(reticulate::py_run_string("from spatialdomains import methods\nmethods._REGISTRY.pop('toy', None)"))

    sce <- simulateVisium(n_spots = 300, n_domains = 3, seed = 2)
    found <- findDomains(sce, method = "toy", preset = "wide", n_domains = 3, seed = 1)
    expect_true("Toy" %in% SingleCellExperiment::reducedDimNames(found))  # named by the method's title
    record <- S4Vectors::metadata(found)$spatialdomains
    expect_identical(record$Toy$preset, "wide")
    expect_identical(record$Toy$parameters$n_neighbors, 12L)
    expect_identical(length(unique(found$domain)), 3L)
    expect_identical(record$domain$backend, "kmeans")  # the method's own clusterer, declared in Python
    page <- tempfile(fileext = ".html")
    domainReport(sce, page, method = "toy", n_domains = 3, engine = "fallback")  # its own process loads it too
    expect_match(paste(readLines(page, warn = FALSE), collapse = "\n"), "<td>method</td><td>Toy</td>", fixed = TRUE)
    imputed <- imputeExpression(sce, method = "toy")
    expect_identical(dim(SingleCellExperiment::altExp(imputed, "Toy_denoised")), c(60L, ncol(sce)))
    expect_error(findDomains(sce, method = "magic"), 'method must be one of "staig", "spotscape", "spami", "baseline", "toy"',
                 fixed = TRUE)
    expect_error(imputeExpression(sce, method = "staig"), 'method must be one of "spotscape", "spami", "toy"',
                 fixed = TRUE)  # only the methods with a decoder
})
