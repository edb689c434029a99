#' Choose and check the Python that runs the models
#'
#' The models run in the Python package \code{spatialdomains}, reached through
#' reticulate. Point the R package at a Python that has it in one of these ways,
#' before the first model runs in the session (reticulate binds one Python per
#' R session):
#' \itemize{
#'   \item \code{useSpatialdomainsPython("spatialdomains/.venv-r")}: a Python
#'     executable or a virtualenv folder, e.g. the one \code{make setup-r-python}
#'     builds in the repository checkout (NumPy < 2, for reticulate before 1.35;
#'     with a newer reticulate, \code{.venv} from \code{make setup} works too);
#'   \item \code{options(spatialdomains.python = "spatialdomains/.venv")};
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
             "it: useSpatialdomainsPython(<python or virtualenv>), options(spatialdomains.python = ...) or ",
             "RETICULATE_PYTHON.", call. = FALSE)
    }
    .check_numpy_for_reticulate(python)
    if (!reticulate::py_module_available("spatialdomains")) {
        stop("the Python at '", python, "' cannot import 'spatialdomains'. Install it there with\n  ",
             python, " -m pip install -c constraints.txt -e <spatialdomains checkout>\n",
             "(torch==2.13.0 first; see the README), or point R at a Python that has it: ",
             "useSpatialdomainsPython(<python or virtualenv>) in a fresh R session.", call. = FALSE)
    }
    .state$bridge <- reticulate::import("spatialdomains.bridge", convert = TRUE)
    .state$bridge
}

## reticulate before 1.35 cannot convert matrices with NumPy 2: refuse before any data is handed over.
.check_numpy_for_reticulate <- function(python) {
    numpy <- tryCatch(reticulate::py_config()$numpy$version, error = function(e) NULL)
    reticulate_version <- utils::packageVersion("reticulate")
    if (!is.null(numpy) && package_version(as.character(numpy)) >= "2" && reticulate_version < "1.35") {
        stop("the Python at '", python, "' has NumPy ", as.character(numpy), ", which reticulate ",
             as.character(reticulate_version), " cannot convert (NumPy 2 needs reticulate 1.35 or later). ",
             "Update reticulate, or point R at a Python with numpy<2: in a spatialdomains checkout, ",
             "`make setup-r-python` builds one in .venv-r (useSpatialdomainsPython(\".venv-r\")).", call. = FALSE)
    }
}

## What Python prints on stderr during a bridge call (progress, step messages,
## warnings) becomes R messages: they show where R's own do (console, RStudio,
## knitr) and suppressMessages() silences them.
.console <- function(text) message(text, appendLF = FALSE)

## Python bridge call shared by all methods: parameters left NULL take the
## preset's value on the Python side.
.embed <- function(method, pieces, params, seed, device, progress) {
    bridge <- .bridge()
    .warn_if_reference_blas()
    out <- bridge$embed(method, pieces$counts, pieces$coordinates, pieces$spot_names, pieces$gene_names,
                        library_size = pieces$library_size, slices = pieces$slices, images = pieces$images,
                        params = .count_params(params),
                        random_state = .count_argument(seed, "seed"), device = device,
                        progress = isTRUE(progress), console = .console)
    if (!is.null(out$image_record)) {
        out$record$image_features <- out$image_record
    }
    out$record$r_session <- list(R = as.character(getRversion()),
                                 spatialdomains = as.character(utils::packageVersion("spatialdomains")),
                                 reticulate = as.character(utils::packageVersion("reticulate")),
                                 python = reticulate::py_config()$python)
    out
}

## Inside R, torch's matrix products run on the BLAS that R loaded; R's
## reference BLAS made a large product ~30x and training ~9x slower (docs/methods.md).
## SpaMI on named modalities (each: counts features x spots, feature names).
.embed_multiomics <- function(modalities, coordinates, spot_names, kinds, params, seed, device, progress,
                              method = "spami") {
    bridge <- .bridge()
    .warn_if_reference_blas()
    out <- bridge$embed_multiomics(modalities, coordinates, spot_names, kinds = .kinds(kinds),
                                   params = .count_params(params),
                                   random_state = .count_argument(seed, "seed"), device = device,
                                   progress = isTRUE(progress), console = .console, method = method)
    out$modalities <- unlist(out$modalities)
    out$record$r_session <- list(R = as.character(getRversion()),
                                 spatialdomains = as.character(utils::packageVersion("spatialdomains")),
                                 reticulate = as.character(utils::packageVersion("reticulate")),
                                 python = reticulate::py_config()$python)
    out
}

## A model's settings without the NULLs, whole-number settings checked as counts.
.count_params <- function(params) {
    params <- Filter(Negate(is.null), params)
    for (count in intersect(names(params), c("n_epochs", "epochs", "n_neighbors", "out_dim", "n_pcs", "n_top_genes",
                                              "min_cells", "min_spots", "n_domains", "n_layers", "batch_size",
                                              "n_resamples", "threads"))) {
        params[[count]] <- .count_argument(params[[count]], count)
    }
    params
}

## What each registered method can do, from the Python registry (bridge.method_info): R offers its methods
## from this, so a method added in Python needs no R edit. With 'method', that method's entry (an error naming
## the choices, in R's words, when it is not one); 'decodes' keeps the methods with a decoder.
.method_info <- function(method = NULL, decodes = FALSE, what = "method") {
    info <- .bridge()$method_info()$methods  # asked each time: a method registered meanwhile is offered at once
    if (isTRUE(decodes)) {
        info <- Filter(function(one) isTRUE(one$decodes), info)
    }
    if (is.null(method)) {
        return(info)
    }
    if (!is.character(method) || length(method) != 1L || !method %in% names(info)) {
        stop(what, " must be one of ", paste0("\"", names(info), "\"", collapse = ", "), call. = FALSE)
    }
    info[[method]]
}

## use_image only for methods that read the tissue image.
.check_use_image <- function(method, use_image) {
    if (isTRUE(use_image) && !"use_image" %in% unlist(.method_info(method)$options)) {
        stop("use_image applies to the methods that read the tissue image (",
             paste(names(Filter(function(one) "use_image" %in% unlist(one$options), .method_info())), collapse = ", "),
             "), not ", method, call. = FALSE)
    }
}

## SpaMI's modality kinds (a named character vector) as a list for Python.
.kinds <- function(kinds) {
    if (is.null(kinds)) {
        return(NULL)
    }
    if (!is.character(kinds) || is.null(names(kinds))) {
        stop("'kinds' must be a named character vector, e.g. c(Antibodies = \"adt\")", call. = FALSE)
    }
    as.list(kinds)
}

.warn_if_reference_blas <- function() {
    blas <- unname(extSoftVersion()["BLAS"])
    if (is.null(.state$blas_checked) && (grepl("/blas/libblas", blas) || grepl("libRblas", blas))) {
        warning("R uses the reference BLAS (", blas, "); the models' matrix products run on it inside R and ",
                "are many times slower than with an optimised BLAS. Install one, e.g. on Debian/Ubuntu: ",
                "apt-get install libopenblas0-pthread", call. = FALSE)
    }
    .state$blas_checked <- TRUE
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
