"""Reading and writing R objects (.rds) from Python, through rpy2 and anndata2ri.

SingleCellExperiment, SpatialExperiment and Seurat objects become AnnData laid out as scanpy does: counts in
``X``, spot positions in ``obsm['spatial']`` (full-resolution x, y), images and scale factors in
``uns['spatial'][library_id]``; the source class is kept in ``uns['rds']`` so that results are written back
as the same class. R starts only when one of these functions is called. This is the Python-host direction:
from Python running inside R (reticulate), starting R through rpy2 aborts R, so it is refused there.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ._utils import atomic_path, running_inside_r
from .errors import BackendUnavailable, InputError

logger = logging.getLogger("spatialdomains")

#: R code reading a Seurat object's spot positions and images, shared with the R package's Seurat door.
SEURAT_SPATIAL_R = Path(__file__).with_name("r") / "seurat_spatial.R"

# Turns any supported object into a SingleCellExperiment with the chosen assay first, plus the pieces
# anndata2ri does not carry: positions (x, y) and images with their scale factors.
_R_READ = r"""function(path, assay, helpers) {
  object <- readRDS(path)
  seurat <- new.env()
  sys.source(helpers, envir = seurat)
  source_class <- class(object)[1]
  positions <- NULL
  libraries <- list()
  scanpy_factors <- function(spot, fiducial, hires, lowres)
    list(spot_diameter_fullres = spot, fiducial_diameter_fullres = fiducial,
         tissue_hires_scalef = hires, tissue_lowres_scalef = lowres)
  if (methods::is(object, "Seurat")) {
    images <- SeuratObject::Images(object)
    for (name in images) {
      image <- object[[name]]
      picture <- seurat$image_picture(image)
      if (!is.null(picture)) {
        libraries[[name]] <- list(image = picture$array,
                                  scalefactors = scanpy_factors(picture$spot, picture$fiducial, picture$hires,
                                                                picture$lowres))
      }
      positions <- rbind(positions, as.matrix(seurat$image_positions(image)))
    }
    if (!is.null(positions)) positions <- positions[colnames(object), , drop = FALSE]
    assays <- SeuratObject::Assays(object)
    default <- SeuratObject::DefaultAssay(object)
    misc <- methods::slot(object, "misc")
    object <- suppressWarnings(Seurat::as.SingleCellExperiment(object, assay = default))
    S4Vectors::metadata(object) <- misc
  } else if (methods::is(object, "SpatialExperiment")) {
    positions <- SpatialExperiment::spatialCoords(object)
    images <- SpatialExperiment::imgData(object)
    for (row in seq_len(nrow(images))) {
      raster <- as.matrix(SpatialExperiment::imgRaster(images$data[[row]]))
      rgb <- grDevices::col2rgb(raster) / 255
      array <- array(t(rgb), c(nrow(raster), ncol(raster), 3L))  # col2rgb walks the raster column-major
      library <- images$sample_id[row]
      entry <- if (is.null(libraries[[library]])) list(images = list(), scalefactors = list())
               else libraries[[library]]
      entry$images[[images$image_id[row]]] <- array
      entry$scalefactors[[paste0("tissue_", images$image_id[row], "_scalef")]] <- images$scaleFactor[row]
      libraries[[library]] <- entry
    }
    object <- methods::as(object, "SingleCellExperiment")
  } else if (!methods::is(object, "SingleCellExperiment")) {
    stop("the .rds file holds a '", source_class, "'; expected a SingleCellExperiment, ",
         "SpatialExperiment or Seurat object")
  }
  if (!assay %in% SummarizedExperiment::assayNames(object)) {
    stop("no assay '", assay, "' in the object (assays: ",
         paste(SummarizedExperiment::assayNames(object), collapse = ", "), "); choose one with assay=")
  }
  names <- SummarizedExperiment::assayNames(object)
  SummarizedExperiment::assays(object) <- SummarizedExperiment::assays(object)[c(assay, setdiff(names, assay))]
  metadata <- S4Vectors::metadata(object)
  S4Vectors::metadata(object) <- list()
  list(sce = object, source_class = source_class, positions = positions, libraries = libraries,
       metadata = metadata)
}"""

# Builds the requested class from the SingleCellExperiment anndata2ri made, with positions and images.
_R_WRITE = r"""function(sce, path, target, assay, positions, library, image, factors, spe_images) {
  names <- SummarizedExperiment::assayNames(sce)
  names[names == "X"] <- assay
  SummarizedExperiment::assayNames(sce) <- names
  if (!is.null(positions)) positions <- matrix(as.numeric(positions), ncol = 2,
                                               dimnames = list(colnames(sce), c("x", "y")))
  if (target == "SingleCellExperiment") {
    if (!is.null(positions)) SingleCellExperiment::reducedDim(sce, "spatial") <- positions
    object <- sce
  } else if (target == "SpatialExperiment") {
    reduced <- SingleCellExperiment::reducedDims(sce)
    reduced <- reduced[setdiff(names(reduced), "spatial")]
    colnames(positions) <- c("pxl_col_in_fullres", "pxl_row_in_fullres")
    columns <- SummarizedExperiment::colData(sce)
    sample_id <- if ("sample_id" %in% names(columns)) columns$sample_id else library
    images <- NULL
    if (length(spe_images) > 0L) {
      images <- S4Vectors::DataFrame(
        sample_id = library, image_id = names(spe_images),
        data = I(lapply(spe_images, function(entry)
          SpatialExperiment::SpatialImage(grDevices::as.raster(pmin(pmax(entry$pixels, 0), 1))))),
        scaleFactor = vapply(spe_images, function(entry) as.numeric(entry$scale), numeric(1)))
    }
    columns$sample_id <- sample_id
    object <- SpatialExperiment::SpatialExperiment(
      assays = SummarizedExperiment::assays(sce), rowData = SummarizedExperiment::rowData(sce),
      colData = columns, reducedDims = reduced, metadata = S4Vectors::metadata(sce),
      sample_id = library, spatialCoords = positions, imgData = images)
  } else {
    reduced <- SingleCellExperiment::reducedDimNames(sce)
    SingleCellExperiment::reducedDims(sce) <- SingleCellExperiment::reducedDims(sce)[setdiff(reduced, "spatial")]
    SingleCellExperiment::mainExpName(sce) <- "Spatial"  # the name Seurat gives Visium assays
    object <- suppressWarnings(Seurat::as.Seurat(sce, counts = assay, data = NULL))
    methods::slot(object, "misc") <- S4Vectors::metadata(sce)
    assay_name <- SeuratObject::DefaultAssay(object)
    key <- paste0(gsub("[^[:alnum:]]", "", library), "_")
    if (!is.null(image)) {
      columns <- SummarizedExperiment::colData(sce)
      grid <- function(name) if (name %in% names(columns)) as.integer(columns[[name]]) else 0L
      coordinates <- data.frame(tissue = 1L, row = grid("array_row"), col = grid("array_col"),
                                imagerow = positions[, "y"], imagecol = positions[, "x"],
                                row.names = colnames(sce))
      spatial <- methods::new("VisiumV1", image = image,
                              scale.factors = Seurat::scalefactors(spot = factors$spot, fiducial = factors$fiducial,
                                                                   hires = factors$hires, lowres = factors$lowres),
                              coordinates = coordinates,
                              spot.radius = factors$spot * factors$lowres / max(dim(image)[1:2]),
                              assay = assay_name, key = key)
    } else {
      spatial <- methods::new("SlideSeq", assay = assay_name, key = key,
                              coordinates = data.frame(x = positions[, "x"], y = positions[, "y"],
                                                       row.names = colnames(sce)))
    }
    object[[library]] <- spatial
  }
  saveRDS(object, path)
  invisible(TRUE)
}"""

CLASSES = ("SingleCellExperiment", "SpatialExperiment", "Seurat")


def read_rds(path: str | Path, *, assay: str = "counts") -> ad.AnnData:
    """Read a SingleCellExperiment, SpatialExperiment or Seurat object from ``.rds`` into AnnData.

    ``X`` holds ``assay`` (raw counts by default; other assays go to ``layers``), reducedDims go to ``obsm``
    (a reducedDim named 'spatial' is taken as the positions of a plain SingleCellExperiment), colData to
    ``obs`` and metadata to ``uns``. SpatialExperiment: ``spatialCoords`` → ``obsm['spatial']``, images and
    scale factors → ``uns['spatial'][sample_id]``. Seurat: the default assay, the image positions (full
    resolution) → ``obsm['spatial']``, Visium images → ``uns['spatial'][image]``. The source class is kept
    in ``uns['rds']``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input '{path}' does not exist")
    ro, converter = _r_session()
    from rpy2.rinterface_lib.embedded import RRuntimeError

    with ro.default_converter.context():
        try:
            parts = ro.r(_R_READ)(str(path.resolve()), assay, str(SEURAT_SPATIAL_R))
        except RRuntimeError as error:
            raise InputError(f"input '{path}': {str(error).removeprefix('Error in ').strip()}") from error
        adata = _anndata_from_parts(parts, converter)
    adata.uns["rds"] = {"class": str(parts.rx2("source_class")[0]), "assay": assay, "path": str(path)}
    return adata


def write_rds(adata: ad.AnnData, path: str | Path, *, as_class: str | None = None,
              library_id: str | None = None) -> Path:
    """Write ``adata`` to ``.rds`` as the class it was read from (``uns['rds']``), or ``as_class``.

    ``X`` becomes the assay it came from (``counts`` by default), ``layers`` other assays, ``obsm`` reducedDims
    (Seurat: reductions), ``obs`` colData (meta.data). Positions (``obsm['spatial']``) become ``spatialCoords``
    (SpatialExperiment), ``reducedDim('spatial')`` (SingleCellExperiment) or an image holding them (Seurat:
    a Visium image when ``uns['spatial']`` has one, else a coordinates-only image). The file is written
    atomically.
    """
    source = adata.uns.get("rds", {})
    target = as_class or source.get("class", "SingleCellExperiment")
    if target not in CLASSES:
        raise InputError(f"as_class must be one of {CLASSES}, got '{target}'")
    positions = adata.obsm.get("spatial")
    if target != "SingleCellExperiment" and positions is None:
        raise InputError(f"writing a {target} needs spot positions in obsm['spatial']")
    ro, converter = _r_session()
    library, image, factors = _image_for_seurat(adata, library_id) if target == "Seurat" else (
        library_id or _first_library(adata), None, None)
    plain = adata.copy()
    # Images live in the object itself for SpatialExperiment and Seurat; only a plain SCE keeps them in metadata.
    uns = {k: v for k, v in plain.uns.items() if not (k == "spatial" and target != "SingleCellExperiment")}
    plain.uns = _convertible_uns(uns, ro, converter)
    if "spatial" in plain.obsm:
        del plain.obsm["spatial"]
    for key in list(plain.obsm):
        plain.obsm[key] = np.asarray(plain.obsm[key], dtype=np.float64)
    path = Path(path)
    with atomic_path(path) as tmp, (ro.default_converter + converter).context():
        sce = converter.py2rpy(plain)
        ro.r(_R_WRITE)(sce, str(tmp), target, source.get("assay", "counts"),
                       ro.NULL if positions is None else np.asarray(positions, dtype=np.float64)[:, :2],
                       library, ro.NULL if image is None else image,
                       ro.NULL if factors is None else ro.ListVector(factors),
                       _spe_images(adata, library, ro) if target == "SpatialExperiment" else ro.NULL)
    return path


def _r_session():
    """rpy2's robjects and the anndata2ri converter, or an error naming what to install."""
    if running_inside_r():
        raise BackendUnavailable("reading or writing .rds from Python running inside R would abort R; in R use "
                                 "readRDS()/saveRDS() and the spatialdomains R package")
    try:
        import anndata2ri
        import rpy2.robjects as ro
        from ._utils import prefer_own_libpython

        prefer_own_libpython()  # R's start put the system's library folders first
    except ImportError as error:
        raise BackendUnavailable(f".rds files need R with rpy2 and anndata2ri ({error}); install them with "
                                 "pip install 'spatialdomains[r]' (R must be installed)") from error
    missing = [name for name in ("SingleCellExperiment", "SummarizedExperiment", "S4Vectors")
               if not ro.r(f'isTRUE(suppressWarnings(requireNamespace("{name}", quietly = TRUE)))')[0]]
    if missing:
        raise BackendUnavailable(f".rds files need the R packages {', '.join(missing)} "
                                 "(e.g. apt-get install r-bioc-singlecellexperiment)")
    return ro, anndata2ri.converter


def _anndata_from_parts(parts, converter) -> ad.AnnData:
    """AnnData from the unconverted pieces of ``_R_READ``, converting each with anndata2ri."""
    adata = converter.rpy2py(parts.rx2("sce"))
    if adata.X is None:
        raise InputError("the object has no assays")
    adata.uns = dict(adata.uns)
    _plain_strings(adata)
    positions = parts.rx2("positions")
    if not _is_null(positions):
        adata.obsm["spatial"] = np.asarray(converter.rpy2py(positions), dtype=np.float64)
    elif "spatial" in adata.obsm:
        adata.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    metadata = parts.rx2("metadata")
    if not _is_null(metadata) and len(metadata):
        skipped = []
        for name, value in zip(metadata.names, metadata):
            try:
                adata.uns[str(name)] = _python_value(value, converter)
            except Exception:  # anndata2ri raises assorted errors for R objects with no Python equivalent
                skipped.append(str(name))
        if skipped:
            warnings.warn(f"metadata entries not convertible to Python were left out: {', '.join(skipped)}",
                          RuntimeWarning, stacklevel=3)
    libraries = parts.rx2("libraries")  # the object's own images take precedence over a metadata copy
    if not _is_null(libraries) and len(libraries):
        adata.uns["spatial"] = {str(name): _library(entry, converter)
                                for name, entry in zip(libraries.names, libraries)}
    return adata


def _plain_strings(adata: ad.AnnData) -> None:
    """Names and string columns as plain Python strings: anndata2ri makes pandas 'string' arrays, which h5ad
    files cannot hold by default."""
    adata.obs_names = pd.Index(adata.obs_names.astype(str), dtype=object)
    adata.var_names = pd.Index(adata.var_names.astype(str), dtype=object)
    for frame in (adata.obs, adata.var):
        for column in frame.columns:
            if isinstance(frame[column].dtype, pd.StringDtype):
                frame[column] = frame[column].astype(object)


def _python_value(value, converter):
    """An R value as Python: named lists become dicts, unnamed lists lists, length-1 vectors scalars."""
    from rpy2.rinterface import ListSexpVector

    if isinstance(value, ListSexpVector):
        names = value.names
        items = [_python_value(item, converter) for item in value]
        if _is_null(names):
            return items
        return {str(name): item for name, item in zip(names, items)}
    converted = converter.rpy2py(value)
    if isinstance(converted, np.ndarray) and converted.shape == (1,):  # an R scalar is a length-1 vector
        return converted[0].item()
    return converted


def _library(entry, converter) -> dict:
    """One library's images and scale factors in scanpy's layout."""
    def array(value, dtype):
        return np.asarray(converter.rpy2py(value), dtype=dtype)

    factors = {str(k): float(array(v, np.float64).ravel()[0])
               for k, v in zip(entry.rx2("scalefactors").names, entry.rx2("scalefactors"))}
    if "images" in list(entry.names):
        images = {str(k): array(v, np.float32) for k, v in zip(entry.rx2("images").names, entry.rx2("images"))}
    else:
        images = {"lowres": array(entry.rx2("image"), np.float32)}
    return {"images": images, "scalefactors": factors}


def _image_for_seurat(adata: ad.AnnData, library_id: str | None):
    """The library, image (prefer lowres) and Seurat scale factors for a Visium image, or no image."""
    libraries = adata.uns.get("spatial", {})
    library = library_id or _first_library(adata)
    entry = libraries.get(library, {})
    images = entry.get("images", {})
    factors = entry.get("scalefactors", {})
    for name in ("lowres", "hires"):
        if name in images and f"tissue_{name}_scalef" in factors:
            scale = float(factors[f"tissue_{name}_scalef"])
            return library, np.asarray(images[name], dtype=np.float64), {
                "spot": float(factors.get("spot_diameter_fullres", 1.0)),
                "fiducial": float(factors.get("fiducial_diameter_fullres", 1.0)),
                "hires": float(factors.get("tissue_hires_scalef", scale)), "lowres": scale}
    return library, None, None


def _spe_images(adata: ad.AnnData, library: str, ro):
    """The library's images with their scale factors, for a SpatialExperiment's imgData."""
    entry = adata.uns.get("spatial", {}).get(library, {})
    factors = entry.get("scalefactors", {})
    images = {}
    for name, pixels in entry.get("images", {}).items():
        scale = factors.get(f"tissue_{name}_scalef")
        if scale is not None:
            images[name] = ro.ListVector({"pixels": np.asarray(pixels, dtype=np.float64), "scale": float(scale)})
    return ro.ListVector(images)


def _first_library(adata: ad.AnnData) -> str:
    libraries = list(adata.uns.get("spatial", {}))
    return str(libraries[0]) if libraries else "slice1"


def _convertible_uns(uns, ro, converter) -> dict:
    """The ``uns`` entries R can hold; others are left out with a warning (the AnnData is not changed)."""
    kept, skipped = {}, []
    for key, value in uns.items():
        if key == "rds":
            continue
        try:
            with (ro.default_converter + converter).context():
                converter.py2rpy(ad.AnnData(uns={key: value}))
            kept[key] = value
        except Exception:  # rpy2 raises NotImplementedError/ValueError/TypeError for unsupported types
            skipped.append(key)
    if skipped:
        warnings.warn(f"uns entries R cannot hold were left out: {', '.join(skipped)}", RuntimeWarning,
                      stacklevel=3)
    return kept


def _is_null(value) -> bool:
    from rpy2.rinterface import NULLType

    return value is None or isinstance(value, NULLType)
