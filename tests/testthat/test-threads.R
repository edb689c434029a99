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
