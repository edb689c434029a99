## These run a fresh R in a subprocess, since reticulate binds one Python per session.
run_r <- function(code, python) {
    rscript <- file.path(R.home("bin"), "Rscript")
    output <- suppressWarnings(system2(rscript, c("-e", shQuote(code)), stdout = TRUE, stderr = TRUE,
                                       env = c(paste0("RETICULATE_PYTHON=", python), "VIRTUAL_ENV=",
                                               "PYTHONPATH=")))
    paste(output, collapse = "\n")
}

## A fresh virtualenv without packages stands for a Python without spatialdomains.
bare_python <- function() {
    skip_without_spatialdomains()
    folder <- tempfile("bare-venv-")
    status <- system2(reticulate::py_config()$python, c("-m", "venv", "--without-pip", folder),
                      stdout = FALSE, stderr = FALSE, env = c("VIRTUAL_ENV=", "PYTHONPATH="))
    skip_if(status != 0, "needs Python's venv module to make a Python without spatialdomains")
    file.path(folder, "bin", "python")
}

test_that("a Python without the package gets a message saying what to install", {
    python <- bare_python()
    output <- run_r("spatialdomains::checkSpatialdomains()", python)
    expect_match(output, "cannot import 'spatialdomains'")
    expect_match(output, "-m pip install")
    expect_match(run_r("cat(spatialdomains::spatialdomainsAvailable())", python), "FALSE")
})

test_that("useSpatialdomainsPython checks the path it is given", {
    expect_error(useSpatialdomainsPython(file.path(tempdir(), "no-such-python")), "no Python executable at")
    expect_error(useSpatialdomainsPython(c("a", "b")), "as one string")
})

test_that("switching Python within a session is refused with the fix", {
    other <- bare_python()
    expect_error(useSpatialdomainsPython(other), "Restart R")
})

test_that("a Python with NumPy 2 under a reticulate that cannot convert it is refused with the fix", {
    skip_if(utils::packageVersion("reticulate") >= "1.35", "this reticulate converts NumPy 2 arrays")
    python <- bare_python()
    site <- system2(python, c("-c", shQuote("import sysconfig; print(sysconfig.get_paths()['purelib'])")),
                    stdout = TRUE)
    dir.create(file.path(site, "numpy"), recursive = TRUE)
    writeLines('__version__ = "2.1.0"', file.path(site, "numpy", "__init__.py"))  # stands for NumPy 2
    output <- run_r("spatialdomains::checkSpatialdomains()", python)
    expect_match(output, "NumPy 2.1.0, which reticulate")
    expect_match(output, "make setup-r-python")
})
