#!/usr/bin/env bash
# Installs R and the R packages spatialdomains uses, from Debian/Ubuntu packages, when run as root, and Chromium
# (the report tests open the HTML in a headless browser).
# libopenblas0-pthread replaces R's reference BLAS: inside R, torch's matrix products run on R's BLAS, and the
# reference one makes training tens of times slower.
# Idempotent: does nothing when everything is present. Without root or apt-get it only reports what is missing;
# the Python parts still install and run (clustering then uses the Python Gaussian-mixture fallback).
set -u
R_PACKAGES="mclust SingleCellExperiment SummarizedExperiment S4Vectors Matrix Seurat SeuratObject reticulate RANN withr \
org.Hs.eg.db GO.db AnnotationDbi qvalue jsonlite testthat knitr rmarkdown"
DEBIAN_PACKAGES="r-base-core r-base-dev r-cran-mclust r-bioc-singlecellexperiment r-cran-seurat r-cran-seuratobject \
r-cran-reticulate r-cran-rann r-cran-withr r-bioc-org.hs.eg.db r-bioc-go.db r-bioc-annotationdbi r-cran-testthat \
r-bioc-qvalue r-cran-jsonlite r-cran-knitr r-cran-rmarkdown pandoc libopenblas0-pthread chromium"

missing_r_packages() {
  command -v Rscript >/dev/null 2>&1 || { echo "R"; return; }
  Rscript --vanilla -e "p <- strsplit('$R_PACKAGES', ' ')[[1]]; m <- p[!vapply(p, requireNamespace, logical(1), quietly = TRUE)]; cat(m)" 2>/dev/null
  Rscript --vanilla -e "if (grepl('/blas/libblas|libRblas', extSoftVersion()['BLAS'])) cat(' OpenBLAS')" 2>/dev/null
  command -v pandoc >/dev/null 2>&1 || echo " pandoc"
  command -v chromium >/dev/null 2>&1 || echo " chromium"
}

missing=$(missing_r_packages)
if [ -z "$missing" ]; then
  echo "R side: R and all R packages present"
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "R side: installing Debian packages for: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $DEBIAN_PACKAGES >/dev/null
  missing=$(missing_r_packages)
  [ -z "$missing" ] && { echo "R side: ready"; exit 0; }
fi
echo "NOTE: R side incomplete (missing: $missing). Install as root with: apt-get install $DEBIAN_PACKAGES"
echo "NOTE: the Python package still installs and runs; clustering falls back to the Python Gaussian mixture."
exit 0
