"""Reading and writing .rds (SingleCellExperiment, Seurat, SpatialExperiment) through rpy2 + anndata2ri."""
import numpy as np
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from spatialdomains.errors import InputError


def _r_with(*packages):
    """None when rpy2, anndata2ri and the R packages are usable, else the reason."""
    try:
        import anndata2ri  # noqa: F401
        import rpy2.robjects as ro
    except ImportError as error:
        return f"needs rpy2 and anndata2ri ({error})"
    try:
        for name in packages:
            if not ro.r(f'isTRUE(suppressWarnings(requireNamespace("{name}", quietly = TRUE)))')[0]:
                return f"needs the R package {name}"
    except Exception as error:  # R cannot start
        return f"needs R through rpy2 ({error})"
    return None


needs_sce = pytest.mark.skipif(_r_with("SingleCellExperiment") is not None,
                               reason=str(_r_with("SingleCellExperiment")))
needs_seurat = pytest.mark.skipif(_r_with("SingleCellExperiment", "Seurat") is not None,
                                  reason=str(_r_with("SingleCellExperiment", "Seurat")))
needs_spe = pytest.mark.skipif(_r_with("SpatialExperiment") is not None, reason=str(_r_with("SpatialExperiment")))

# An object made in R, the way an R user has it: counts, annotations, positions, another reducedDim, metadata.
R_MAKE_SCE = """function(path) {
  set.seed(1)
  counts <- Matrix::rsparsematrix(60, 40, 0.3, rand.x = function(n) rpois(n, 5) + 1)
  dimnames(counts) <- list(paste0("gene", 1:60), paste0("spot", 1:40))
  xy <- as.matrix(expand.grid(x = (1:8) * 100, y = (1:5) * 100))
  rownames(xy) <- colnames(counts)
  sce <- SingleCellExperiment::SingleCellExperiment(
    assays = list(counts = counts, logcounts = log1p(counts)),
    colData = S4Vectors::DataFrame(region = factor(rep(c("a", "b"), 20)), score = seq(0, 1, length.out = 40)),
    reducedDims = list(spatial = xy, PCA = matrix(rnorm(80), 40, 2)),
    metadata = list(note = "kept", params = list(k = 3L)))
  saveRDS(sce, path)
}"""

R_MAKE_SEURAT = """function(path) {
  set.seed(2)
  counts <- Matrix::rsparsematrix(60, 40, 0.3, rand.x = function(n) rpois(n, 5) + 1)
  dimnames(counts) <- list(paste0("gene", 1:60), paste0("spot", 1:40))
  object <- SeuratObject::CreateSeuratObject(counts, assay = "Spatial")
  object$region <- rep(c("a", "b"), 20)
  grid <- expand.grid(col = 1:8, row = 1:5)
  positions <- data.frame(tissue = 1L, row = grid$row, col = grid$col, imagerow = grid$row * 100,
                          imagecol = grid$col * 100, row.names = colnames(counts))
  image <- methods::new("VisiumV1", image = array(0.5, c(30, 40, 3)),
                        scale.factors = Seurat::scalefactors(spot = 55, fiducial = 100, hires = 0.2, lowres = 0.05),
                        coordinates = positions, spot.radius = 0.02, assay = "Spatial", key = "slice1_")
  object[["slice1"]] <- image
  saveRDS(object, path)
}"""


def _r(code):
    import rpy2.robjects as ro

    with ro.default_converter.context():
        return ro.r(code)


# Seurat 5's VisiumV2 for SeuratObject 4 (which has no such class), built as Seurat builds it, field for field:
# Seurat 5.4 makes an FOV of centroids from (imagecol, imagerow) and marks coords_x_orientation = "horizontal";
# Seurat 5.0-5.3 made it from (imagerow, imagecol), unmarked. The stand-in takes the FOV and adds VisiumV2's slots
# (SeuratObject 4's FOV cannot be extended through new()).
R_VISIUM_V2 = """function(path, target, seurat_5_4) {
  if (!methods::isClass("VisiumV2"))
    methods::setClass("VisiumV2", contains = "FOV", where = globalenv(),
                      slots = c(image = "array", scale.factors = "ANY", coords_x_orientation = "character"))
  object <- readRDS(path)
  v1 <- object[["slice1"]]
  coordinates <- methods::slot(v1, "coordinates")
  columns <- if (seurat_5_4) c("imagecol", "imagerow") else c("imagerow", "imagecol")
  image <- SeuratObject::CreateFOV(coordinates[, columns], type = "centroids", radius = 55, assay = "Spatial",
                                   key = "slice1_")
  class(image) <- structure("VisiumV2", package = ".GlobalEnv")
  attr(image, "image") <- methods::slot(v1, "image")
  attr(image, "scale.factors") <- methods::slot(v1, "scale.factors")
  attr(image, "coords_x_orientation") <- if (seurat_5_4) "horizontal" else character(0)
  object@images[["slice1"]] <- image
  saveRDS(object, target)
}"""


@needs_seurat
@pytest.mark.parametrize("seurat_5_4", [True, False], ids=["Seurat 5.4", "Seurat 5.0-5.3"])
def test_seurat_visium_v2_is_read_at_the_visium_v1_positions_with_its_image(tmp_path, seurat_5_4):
    source = tmp_path / "seurat.rds"
    _r(R_MAKE_SEURAT)(str(source))
    _r(R_VISIUM_V2)(str(source), str(tmp_path / "v2.rds"), seurat_5_4)
    v1, v2 = sd.io.read_rds(source), sd.io.read_rds(tmp_path / "v2.rds")
    np.testing.assert_array_equal(v2.obsm["spatial"], v1.obsm["spatial"])  # x = image column, y = image row
    assert v2.uns["spatial"]["slice1"]["images"]["lowres"].shape == (30, 40, 3)
    assert v2.uns["spatial"]["slice1"]["scalefactors"] == v1.uns["spatial"]["slice1"]["scalefactors"]


@needs_sce
def test_sce_round_trip(tmp_path):
    source = tmp_path / "sample.rds"
    _r(R_MAKE_SCE)(str(source))
    before = source.read_bytes()

    adata = sd.io.read_rds(source)
    assert source.read_bytes() == before  # the user's file is not touched
    assert adata.shape == (40, 60)
    assert list(adata.obs_names[:2]) == ["spot1", "spot2"] and adata.var_names[0] == "gene1"
    assert sp.issparse(adata.X) and np.all(adata.X.data >= 1)
    assert "logcounts" in adata.layers
    np.testing.assert_allclose(np.log1p(adata.X.toarray()), np.asarray(adata.layers["logcounts"].todense()))
    assert list(adata.obs["region"].cat.categories) == ["a", "b"]
    np.testing.assert_array_equal(adata.obsm["spatial"][:3], [[100, 100], [200, 100], [300, 100]])
    assert adata.obsm["X_pca"].shape == (40, 2)
    assert adata.uns["note"] == "kept" and adata.uns["params"] == {"k": 3} and adata.uns["rds"]["class"] == "SingleCellExperiment"

    adata.obs["domain"] = np.where(adata.obsm["spatial"][:, 0] > 400, "2", "1")
    adata.obsm["X_staig"] = np.arange(80, dtype=np.float64).reshape(40, 2)
    target = tmp_path / "result.rds"
    sd.io.write_rds(adata, target)
    same = _r("""function(a, b) {
      x <- readRDS(a); y <- readRDS(b)
      c(class = is(y, "SingleCellExperiment"),
        counts = isTRUE(all.equal(as.matrix(SummarizedExperiment::assay(x, "counts")),
                                  as.matrix(SummarizedExperiment::assay(y, "counts")))),
        positions = isTRUE(all.equal(unname(SingleCellExperiment::reducedDim(x, "spatial")),
                                     unname(SingleCellExperiment::reducedDim(y, "spatial")))),
        region = identical(as.character(x$region), as.character(y$region)),
        domain = identical(unname(as.character(y$domain)), unname(ifelse(
                     SingleCellExperiment::reducedDim(x, "spatial")[, 1] > 400, "2", "1"))),
        embedding = identical(dim(SingleCellExperiment::reducedDim(y, "X_staig")), c(40L, 2L)),
        note = identical(S4Vectors::metadata(y)$note, "kept"))
    }""")(str(source), str(target))
    assert dict(zip(same.names, same)) == {k: True for k in same.names}


@needs_seurat
def test_seurat_round_trip(tmp_path):
    source = tmp_path / "seurat.rds"
    _r(R_MAKE_SEURAT)(str(source))
    adata = sd.io.read_rds(source)
    assert adata.uns["rds"]["class"] == "Seurat"
    assert adata.shape == (40, 60)
    np.testing.assert_array_equal(adata.obsm["spatial"][:2], [[100, 100], [200, 100]])  # (imagecol, imagerow)
    library = adata.uns["spatial"]["slice1"]
    assert library["images"]["lowres"].shape == (30, 40, 3)
    assert library["scalefactors"] == {"spot_diameter_fullres": 55.0, "fiducial_diameter_fullres": 100.0,
                                       "tissue_hires_scalef": 0.2, "tissue_lowres_scalef": 0.05}

    adata.obs["domain"] = np.where(adata.obsm["spatial"][:, 1] > 250, "2", "1")
    target = tmp_path / "result.rds"
    sd.io.write_rds(adata, target)
    same = _r("""function(a, b) {
      x <- readRDS(a); y <- readRDS(b)
      img_x <- x[["slice1"]]; img_y <- y[["slice1"]]
      c(class = is(y, "Seurat"),
        counts = isTRUE(all.equal(as.matrix(SeuratObject::GetAssayData(x, slot = "counts")),
                                  as.matrix(SeuratObject::GetAssayData(y, slot = "counts")))),
        positions = isTRUE(all.equal(img_x@coordinates[, c("imagerow", "imagecol")],
                                     img_y@coordinates[, c("imagerow", "imagecol")])),
        image = identical(dim(img_y@image), dim(img_x@image)),
        region = identical(y$region, x$region),
        domain = identical(unname(as.character(y$domain)), ifelse(img_x@coordinates$imagerow > 250, "2", "1")))
    }""")(str(source), str(target))
    assert dict(zip(same.names, same)) == {k: True for k in same.names}
    # Read back once more: the same positions come out.
    again = sd.io.read_rds(target)
    np.testing.assert_array_equal(again.obsm["spatial"], adata.obsm["spatial"])


@needs_spe
def test_spatialexperiment_round_trip(tmp_path):
    adata = sd.datasets.simulate_visium(200, 3, seed=1, image=True)
    target = tmp_path / "spe.rds"
    sd.io.write_rds(adata, target, as_class="SpatialExperiment")
    back = sd.io.read_rds(target)
    assert back.uns["rds"]["class"] == "SpatialExperiment"
    np.testing.assert_allclose(back.obsm["spatial"], adata.obsm["spatial"])
    np.testing.assert_allclose(back.X.toarray(), adata.X.toarray())
    assert list(back.obs["sample_id"].unique()) == ["simulated"]
    original, returned = adata.uns["spatial"]["simulated"], back.uns["spatial"]["simulated"]
    assert returned["scalefactors"] == {"tissue_hires_scalef": original["scalefactors"]["tissue_hires_scalef"]}
    # Images travel as 8-bit colours in R's rasters.
    np.testing.assert_allclose(returned["images"]["hires"], original["images"]["hires"], atol=1 / 255)


@needs_spe
def test_spatialexperiment_with_image_is_read_as_scanpy_lays_it_out(tmp_path):
    source = tmp_path / "spe.rds"
    _r("""function(path) {
      set.seed(3)
      counts <- Matrix::rsparsematrix(30, 20, 0.4, rand.x = function(n) rpois(n, 5) + 1)
      dimnames(counts) <- list(paste0("g", 1:30), paste0("s", 1:20))
      xy <- cbind(pxl_col_in_fullres = (1:20) * 10, pxl_row_in_fullres = rep(c(5, 15), 10))
      pixels <- array(0, c(4, 6, 3)); pixels[, , 1] <- 1; pixels[1, 6, ] <- 1  # red, 4 x 6, top-right white
      image <- SpatialExperiment::SpatialImage(grDevices::as.raster(pixels))
      spe <- SpatialExperiment::SpatialExperiment(
        assays = list(counts = counts), sample_id = "s1", spatialCoords = xy,
        imgData = S4Vectors::DataFrame(sample_id = "s1", image_id = "lowres", data = I(list(image)),
                                       scaleFactor = 0.05))
      saveRDS(spe, path)
    }""")(str(source))
    adata = sd.io.read_rds(source)
    assert adata.uns["rds"]["class"] == "SpatialExperiment"
    np.testing.assert_array_equal(adata.obsm["spatial"][:2], [[10, 5], [20, 15]])
    library = adata.uns["spatial"]["s1"]
    assert library["scalefactors"] == {"tissue_lowres_scalef": 0.05}
    image = library["images"]["lowres"]
    assert image.shape == (4, 6, 3)
    np.testing.assert_array_equal(image[..., 0], 1)
    np.testing.assert_array_equal(image[0, 5], [1, 1, 1])
    assert image[..., 1:].sum() == 2
    assert list(adata.obs["sample_id"].unique()) == ["s1"]


@needs_sce
def test_rds_errors_name_the_problem(tmp_path):
    frame = tmp_path / "frame.rds"
    _r("function(path) saveRDS(data.frame(a = 1), path)")(str(frame))
    with pytest.raises(InputError, match="holds a 'data.frame'"):
        sd.io.read_rds(frame)
    source = tmp_path / "sample.rds"
    _r(R_MAKE_SCE)(str(source))
    with pytest.raises(InputError, match="no assay 'raw'.*assay="):
        sd.io.read_rds(source, assay="raw")
    with pytest.raises(InputError, match="does not exist"):
        sd.io.read_rds(tmp_path / "missing.rds")
    with pytest.raises(InputError, match="as_class must be one of"):
        sd.io.write_rds(sd.io.read_rds(source), tmp_path / "x.rds", as_class="loom")


def test_rds_is_refused_inside_r(monkeypatch, tmp_path):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "rpycall", types.ModuleType("rpycall"))
    with pytest.raises(sd.errors.BackendUnavailable, match="inside R would abort R"):
        sd.io.read_rds(tmp_path / "x.rds") if (tmp_path / "x.rds").touch() is None else None


@needs_sce
def test_cli_accepts_rds_and_writes_results_back(tmp_path):
    from spatialdomains.cli import main

    adata = sd.datasets.simulate_visium(300, 3, seed=2)
    source = tmp_path / "sample.rds"
    sd.io.write_rds(adata, source)
    out = tmp_path / "out"
    assert main(["run", str(source), "--n-domains", "3", "--epochs", "20", "--out", str(out), "--quiet",
                 "--library-size-key", "total_counts"]) == 0
    result = _r("""function(path) { x <- readRDS(path)
      c(is(x, "SingleCellExperiment"), "domain" %in% names(SummarizedExperiment::colData(x)),
        "X_staig" %in% SingleCellExperiment::reducedDimNames(x)) }""")(str(out / "result.rds"))
    assert list(result) == [True, True, True]
    assert (out / "result.h5ad").exists()
