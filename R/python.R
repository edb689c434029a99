#' Choose and check the Python that runs the models
#'
#' The models run in the Python package \code{spatialdomains}, reached through
#' reticulate. Point the R package at a Python that has it in one of these ways,
#' before the first model runs in the session (reticulate binds one Python per
#' R session):
#' \itemize{
#'   \item \code{useSpatialdomainsPython("/path/to/python")} (or a virtualenv
#'     folder);
#'   \item \code{options(spatialdomains.python = "/path/to/python")};
#'   \item the standard reticulate variables, e.g. \code{RETICULATE_PYTHON}, or
#'     \code{reticulate::use_virtualenv()}.
#' }
#' Nothing is ever installed behind your back: when the package cannot be
#' imported, \code{checkSpatialdomains()} says what to install and where.
#'
#' @param python Path to a Python executable, or to a virtualenv folder (one
#'   holding \code{bin/python}).
#' @return \code{useSpatialdomainsPython()} and \code{checkSpatialdomains()}
#'   return the Python executable in use, invisibly; \code{checkSpatialdomains()}
#'   stops with instructions when the package cannot be imported.
#'   \code{spatialdomainsAvailable()} returns \code{TRUE} or \code{FALSE} and
#'   never stops.
#' @examples
#' spatialdomainsAvailable()
#' @name spatialdomains-python
NULL

#' @rdname spatialdomains-python
#' @export
useSpatialdomainsPython <- function(python) {
    python <- .python_executable(python)
    if (reticulate::py_available(initialize = FALSE)) {
        current <- reticulate::py_config()$python
        # Compare folders, not resolved files: every virtualenv's python links to the same interpreter.
        if (normalizePath(dirname(current), mustWork = FALSE) != normalizePath(dirname(python), mustWork = FALSE)) {
            stop("this R session already uses the Python at '", current, "'; reticulate cannot switch ",
                 "Pythons within a session. Restart R and call useSpatialdomainsPython() first.",
                 call. = FALSE)
        }
    } else {
        reticulate::use_python(python, required = TRUE)
    }
    invisible(python)
}

#' @rdname spatialdomains-python
#' @export
checkSpatialdomains <- function() {
    .bridge()
    invisible(reticulate::py_config()$python)
}

#' @rdname spatialdomains-python
#' @export
spatialdomainsAvailable <- function() {
    isTRUE(tryCatch({
        .bridge()
        TRUE
    }, error = function(e) FALSE))
}

.state <- new.env(parent = emptyenv())

## The Python bridge module, imported once per session (after the Python
## chosen by the option, when one is set).
.bridge <- function() {
    if (!is.null(.state$bridge)) {
        return(.state$bridge)
    }
    chosen <- getOption("spatialdomains.python")
    if (!is.null(chosen)) {
        useSpatialdomainsPython(chosen)
    }
    python <- tryCatch(reticulate::py_config()$python, error = function(e) NULL)
    if (is.null(python) || !reticulate::py_available(initialize = TRUE)) {
        stop("no Python found. Install Python (>= 3.10) with the spatialdomains package, then point R at ",
             "it: useSpatialdomainsPython('/path/to/python'), options(spatialdomains.python = ...) or ",
             "RETICULATE_PYTHON.", call. = FALSE)
    }
    if (!reticulate::py_module_available("spatialdomains")) {
        stop("the Python at '", python, "' cannot import 'spatialdomains'. Install it there with\n  ",
             python, " -m pip install -c constraints.txt -e /path/to/spatialdomains\n",
             "(torch==2.13.0 first; see the README), or point R at a Python that has it: ",
             "useSpatialdomainsPython('/path/to/python') in a fresh R session.", call. = FALSE)
    }
    .state$bridge <- reticulate::import("spatialdomains.bridge", convert = TRUE)
    .state$bridge
}

.python_executable <- function(python) {
    if (!is.character(python) || length(python) != 1L || !nzchar(python)) {
        stop("'python' must be the path of a Python executable or virtualenv, as one string", call. = FALSE)
    }
    if (dir.exists(python)) {
        python <- file.path(python, "bin", "python")
    }
    if (!file.exists(python)) {
        stop("no Python executable at '", python, "'", call. = FALSE)
    }
    python
}
