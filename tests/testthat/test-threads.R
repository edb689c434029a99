test_that("a run from R keeps R's BLAS to one thread while it trains and restores it afterwards", {
    skip_without_spatialdomains()
    skip_if_not(reticulate::py_module_available("threadpoolctl"), "needs threadpoolctl in the Python")
    pools <- function() {
        info <- reticulate::import("threadpoolctl")$threadpool_info()
        blas <- Filter(function(pool) identical(pool$user_api, "blas"), info)
        stats::setNames(vapply(blas, function(pool) as.integer(pool$num_threads), 1L),
                        vapply(blas, function(pool) pool$filepath, ""))
    }
    before <- pools()
    sce <- runSTAIG(small_sample(), n_epochs = 2, seed = 1)
    after <- pools()
    expect_identical(after[names(before)], before)
    threads <- S4Vectors::metadata(sce)$spatialdomains$STAIG$threads
    expect_identical(as.integer(threads$blas), 1L)
    expect_true(nzchar(threads$reason))
})

test_that("inside R, numba keeps off the OpenMP pool torch shares with R", {
    # R loads the system's OpenMP runtime first, so torch's threads are that runtime's inside R; numba's 'omp'
    # layer (scanpy's gene selection) on the same pool made every later torch operation about a third slower.
    skip_without_spatialdomains()
    skip_if_not(reticulate::py_module_available("numba"), "needs numba in the Python")
    runSTAIG(small_sample(), n_epochs = 2, seed = 1)
    numba <- reticulate::import("numba")
    expect_identical(numba$config$THREADING_LAYER, "workqueue")
    # the layer a parallel function then starts on
    reticulate::py_run_string(paste(sep = "\n", "import numba, numpy",
                                    "@numba.njit(parallel=True)",
                                    "def total(x):",
                                    "    s = 0.0",
                                    "    for i in numba.prange(x.shape[0]):",
                                    "        s += x[i]",
                                    "    return s",
                                    "total(numpy.ones(1000))"))
    expect_identical(numba$threading_layer(), "workqueue")
})
