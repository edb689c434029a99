test_that("domainReport writes the report of a SingleCellExperiment's stored domains and leaves x alone", {
    skip_without_spatialdomains()
    sce <- small_sample()
    sce$domain <- sce$ground_truth
    before <- sce
    file <- tempfile(fileext = ".html")
    tables <- tempfile("tables")

    path <- domainReport(sce, file, engine = "fallback", sample = "small", outputs_dir = tables,
                         label_key = "ground_truth")

    expect_identical(sce, before)
    expect_identical(normalizePath(path), normalizePath(file))
    page <- paste(readLines(file, warn = FALSE), collapse = "\n")
    for (anchor in c("summary", "overview", "domains", "umap", "sizes", "markers", "deg-tables", "volcano", "go",
                     "provenance")) {
        expect_match(page, paste0('id="', anchor, '"'), fixed = TRUE)
    }
    expect_false(grepl('id="integration"', page, fixed = TRUE))  # one slice: no integration section
    expect_match(page, "Compared with obs['ground_truth']: ARI 1.000", fixed = TRUE)  # the domains are the truth
    expect_error(domainReport(sce, tempfile(fileext = ".html"), label_key = "layer"), "label_key must name a column")
    expect_match(page, "spatialdomains report: small", fixed = TRUE)
    expect_match(page, "Engine: fallback", fixed = TRUE)
    expect_match(page, "UMAP of X_STAIG", fixed = TRUE)  # the stored embedding, not a new one
    markers <- utils::read.csv(file.path(tables, "markers.csv"))
    expect_setequal(unique(markers$domain), levels(factor(sce$ground_truth)))
    domains <- utils::read.csv(file.path(tables, "domains.csv"))
    expect_identical(as.character(domains$domain), as.character(sce$domain))
    # An existing report is replaced only with force = TRUE, and the message says so in R's words.
    expect_error(domainReport(sce, file, engine = "fallback"), "add force = TRUE")
    expect_error(domainReport(sce, file, engine = "fallback", n_domains = 1), "n_domains = 1")
})

test_that("domainReport passes the method's preset and the refinement to the report", {
    skip_without_spatialdomains()
    sce <- small_sample()
    tables <- tempfile("tables")
    page <- tempfile(fileext = ".html")
    domainReport(sce, page, method = "staig", n_domains = 3, epochs = 2L, preset = "cells",
                 refine = FALSE, engine = "fallback", outputs_dir = tables, n_markers = 4)
    expect_match(paste(readLines(page, warn = FALSE), collapse = "\n"),
                 "Dot plot of the top 4 marker genes of each domain", fixed = TRUE)  # any report option, by name
    model <- jsonlite::read_json(file.path(tables, "provenance.json"))$model
    expect_identical(model$staig$preset, "cells")
    expect_identical(c(model$staig$parameters$n_neighbors, model$staig$parameters$n_layers), c(8L, 2L))
    expect_false(model$cluster$refined)  # a Visium lattice, refined on "auto"
    expect_error(domainReport(sce, tempfile(fileext = ".html"), method = "staig", refine = "maybe"),
                 'refine = "maybe": give "auto", TRUE or FALSE', fixed = TRUE)
    expect_error(domainReport(sce, tempfile(fileext = ".html"), method = "spotscape", preset = "cells"),
                 'preset = "cells" does not apply to method = "spotscape" (its presets: default)', fixed = TRUE)
})

test_that("domainReport works for Seurat objects and explains a missing domain column", {
    skip_without_spatialdomains()
    skip_if_not_installed("SeuratObject")
    so <- simulateVisium(n_spots = 300, n_domains = 3, seed = 4, class = "Seurat")
    expect_error(domainReport(so, tempfile(fileext = ".html")), "no column 'domain'.*findDomains")
    so$domain <- so$ground_truth
    file <- tempfile(fileext = ".html")
    domainReport(so, file, engine = "fallback")
    expect_true(file.exists(file))
    expect_match(paste(readLines(file, warn = FALSE), collapse = "\n"), "UMAP of X_pca", fixed = TRUE)
    expect_error(domainReport(so, tempfile(), method = "magic"), 'method = "magic" is not one of staig, spotscape',
                 fixed = TRUE)
})

test_that("the fallback GO engine matches phyper and p.adjust by hand on a small annotation", {
    skip_without_spatialdomains()
    genes <- sprintf("g%02d", 0:39)
    sets <- list(T1 = genes[1:12], T2 = genes[6:15], T4 = genes[21:35], T5 = genes[36:40])
    gmt <- tempfile(fileext = ".gmt")
    writeLines(vapply(names(sets), function(s) paste(c(s, paste("about", s), sets[[s]]), collapse = "\t"),
                      character(1)), gmt)
    query <- c("g03", "g01", "g07", "g11", "g02", "g21", "unannotated")
    enrichment <- reticulate::import("spatialdomains.analysis", convert = TRUE)
    result <- enrichment$enrich(query, enrichment$read_gmt(gmt), min_size = 5L, max_size = 500L)

    annotated <- unique(unlist(sets))
    n <- sum(query %in% annotated)
    k <- vapply(result$ID, function(s) sum(query %in% sets[[s]]), numeric(1))
    M <- vapply(result$ID, function(s) length(sets[[s]]), numeric(1))
    p <- phyper(k - 1, M, length(annotated) - M, n, lower.tail = FALSE)
    expect_identical(sort(result$ID), c("T1", "T2", "T4"))
    expect_equal(result$pvalue, unname(p), tolerance = 1e-12)
    expect_equal(result$p.adjust, p.adjust(unname(p), "BH"), tolerance = 1e-12)
    expect_identical(result$GeneRatio, paste0(k, "/", n))
    expect_identical(result$BgRatio, paste0(M, "/", length(annotated)))
})
