"""SpatialData (``.zarr``) in and out, through the ``spatialdata`` package (the optional extra
``spatialdomains[spatialdata]``).

Reading takes one table and places each row at the centroid of the shape, point or label it annotates, in one
coordinate system (``global`` unless asked), so the coordinates, the other elements and an image share one frame;
a table that annotates nothing with a position uses its own ``obsm['spatial']``. Writing puts the domains,
embeddings and the run's record into that table in a new store; the input store is never changed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ._tissue_image import attach_image
from .errors import BackendUnavailable, InputError, option

logger = logging.getLogger("spatialdomains")

#: Where the reader notes the store and table a sample came from (what :func:`write_spatialdata` updates).
SOURCE_KEY = "spatialdata_source"
#: Results written back into the table: these ``obs`` columns, and every embedding ``obsm['X_<method>']``.
RESULT_COLUMNS = ("domain", "domain_unrefined")
RECORD_KEY = "spatialdomains"


def _spatialdata():
    try:
        import spatialdata
    except ImportError as error:
        raise BackendUnavailable(
            f"reading and writing SpatialData (.zarr) needs the spatialdata package ({error}): "
            "pip install 'spatialdomains[spatialdata]'") from None
    return spatialdata


def read_spatialdata(path: str | Path, *, table: str | None = None, coordinate_system: str = "global",
                     image: str | bool = False) -> ad.AnnData:
    """Read one table of a SpatialData store as an AnnData with ``obsm['spatial']``.

    ``table``: which table (needed only when the store has several). ``image``: True (the store's only image, or
    the largest of several) or an image's name, stored as the hires image when its transformation into
    ``coordinate_system`` is a scale (as for Visium); False (default) reads no pixels.
    """
    spatialdata = _spatialdata()
    path = Path(path)
    if not path.exists():
        raise InputError(f"input '{path}' does not exist")
    try:
        with _quiet():
            sdata = spatialdata.read_zarr(path)
    except Exception as error:  # noqa: BLE001 - zarr, ome-zarr and pydantic raise many types for a foreign store
        raise InputError(f"input '{path}' is not a readable SpatialData store ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); check that it was written by "
                         "spatialdata and copied completely") from None
    name = _table_name(sdata, table, path)
    adata = sdata.tables[name].copy()
    adata.obsm["spatial"] = _positions(sdata, adata, name, coordinate_system, path)
    adata.uns[SOURCE_KEY] = {"path": str(path.resolve()), "table": name, "coordinate_system": coordinate_system}
    if image:
        _attach_image(sdata, adata, image, coordinate_system, path)
    return adata


def write_spatialdata(adata: ad.AnnData, out: str | Path, *, source: str | Path | None = None,
                      table: str | None = None) -> Path:
    """Write the SpatialData store the AnnData came from to ``out`` (a new ``.zarr``), with the domains
    (``obs['domain']``, ``obs['domain_unrefined']``), the embeddings (``obsm['X_<method>']``) and the record
    (``uns['spatialdomains']``) added to its table. Rows are matched by name; the table's other contents and
    every other element are copied unchanged. ``source``/``table`` default to where :func:`read_spatialdata`
    read the AnnData from."""
    spatialdata = _spatialdata()
    origin = adata.uns.get(SOURCE_KEY, {})
    source = Path(source or origin.get("path") or "")
    if not str(source) or not source.exists():
        raise InputError(f"{option('source')}: give the SpatialData store the results belong to (the AnnData does "
                         "not say where it was read from)")
    out = Path(out)
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        where = "the input store" if out.resolve() == source.resolve() else "inside the input store"
        raise InputError(f"out '{out}' is {where} '{source}': write the results to a new .zarr beside it, so that "
                         "the input stays as it was")
    with _quiet():
        sdata = spatialdata.read_zarr(source)
    name = _table_name(sdata, table or origin.get("table"), source)
    target = sdata.tables[name]
    missing = adata.obs_names.difference(target.obs_names)
    if len(missing):
        raise InputError(f"{len(missing)} rows of the results (e.g. '{missing[0]}') are not in table '{name}' of "
                         f"'{source}': write the results to the store they were read from")
    for column in RESULT_COLUMNS:
        if column in adata.obs:
            target.obs[column] = adata.obs[column].reindex(target.obs_names)
    for key in adata.obsm:
        if key.startswith("X_") and key != "X_umap":
            values = pd.DataFrame(np.asarray(adata.obsm[key]), index=adata.obs_names)
            target.obsm[key] = values.reindex(target.obs_names).to_numpy(dtype=np.float32)
    if RECORD_KEY in adata.uns:
        target.uns[RECORD_KEY] = adata.uns[RECORD_KEY]
    if out.exists():
        raise InputError(f"out '{out}' already exists: choose a new .zarr path (an existing store is not replaced)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:  # written beside the target and moved into place whole: never a half-written store at ``out``
        with _quiet():
            sdata.write(staging / out.name)
        os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


@contextlib.contextmanager
def _quiet():
    """Hold spatialdata's and ome-zarr's information messages back (format notes, the store's new path)."""
    quieter = {"spatialdata": logging.WARNING, "ome_zarr": logging.ERROR}  # ome-zarr warns of format versions
    loggers = [logging.getLogger(name) for name in quieter]
    levels = [item.level for item in loggers]
    for item, level in zip(loggers, quieter.values()):
        item.setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)


def _table_name(sdata, table: str | None, path: Path) -> str:
    names = list(sdata.tables)
    if not names:
        raise InputError(f"SpatialData store '{path}' has no table: domains are found from a table of counts "
                         "(e.g. one written by spatialdata-io)")
    if table is None:
        if len(names) > 1:
            raise InputError(f"SpatialData store '{path}' has {len(names)} tables ({', '.join(names)}): choose one "
                             f"with {option('table')}")
        return names[0]
    if table not in names:
        raise InputError(f"{option('table', table)}: SpatialData store '{path}' has no such table (tables: "
                         f"{', '.join(names)})")
    return table


def _positions(sdata, adata: ad.AnnData, name: str, coordinate_system: str, path: Path) -> np.ndarray:
    """Each row's centroid in ``coordinate_system``, from the element it annotates; else ``obsm['spatial']``."""
    from spatialdata import get_centroids

    attrs = adata.uns.get("spatialdata_attrs", {})
    regions, region_key, instance_key = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    annotated = [r for r in regions if r in sdata and _has_positions(sdata[r])]
    if not annotated or region_key not in adata.obs or instance_key not in adata.obs:
        if "spatial" in adata.obsm:
            return np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
        raise InputError(f"table '{name}' of '{path}' neither annotates shapes, points or labels of the store nor "
                         "has obsm['spatial']: the positions of its rows are needed")
    positions = np.full((adata.n_obs, 2), np.nan)
    for region in annotated:
        rows = (adata.obs[region_key].astype(str) == region).to_numpy()
        try:
            centroids = get_centroids(sdata[region], coordinate_system=coordinate_system)
        except (ValueError, KeyError, AssertionError) as error:
            systems = ", ".join(sdata.coordinate_systems)
            raise InputError(f"element '{region}' of '{path}' has no position in coordinate system "
                             f"'{coordinate_system}' ({error}); choose one of: {systems}") from None
        centroids = centroids.compute() if hasattr(centroids, "compute") else centroids
        wanted = adata.obs[instance_key].to_numpy()[rows]
        found = centroids.reindex(wanted)
        if found.isna().any().any():
            raise InputError(f"{int(found.isna().any(axis=1).sum())} rows of table '{name}' annotate instances "
                             f"missing from element '{region}' of '{path}': the table and the element disagree")
        positions[rows] = found[["x", "y"]].to_numpy(dtype=np.float64)
    return positions


def _has_positions(element) -> bool:
    from spatialdata.models import get_model, Image2DModel, Image3DModel

    return get_model(element) not in (Image2DModel, Image3DModel)


def _attach_image(sdata, adata: ad.AnnData, image: str | bool, coordinate_system: str, path: Path) -> None:
    """The image as the hires image, at its pixels per coordinate unit, when its transformation is a scale."""
    from spatialdata.transformations import get_transformation

    names = list(sdata.images)
    if not names:
        raise InputError(f"SpatialData store '{path}' has no image: leave out {option('image')}")
    if isinstance(image, str):
        if image not in names:
            raise InputError(f"{option('image', image)}: no such image in '{path}' (images: {', '.join(names)})")
        chosen = image
    else:
        chosen = max(names, key=lambda n: np.prod(_largest_scale(sdata.images[n]).shape))
    element = sdata.images[chosen]
    pixels = _smallest_scale_above(element, 2000)
    full = _largest_scale(element)
    transformation = get_transformation(element, to_coordinate_system=coordinate_system)
    matrix = transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    if abs(matrix[0, 1]) > 1e-9 or abs(matrix[1, 0]) > 1e-9 or np.abs(matrix[:2, 2]).max() > 1e-6:
        raise InputError(f"image '{chosen}' of '{path}' is rotated or shifted against the coordinates; the domains "
                         "can be drawn on an image that is only scaled: leave out the image, or give one as a file")
    downsampling = full.shape[-1] / pixels.shape[-1]
    scale = 1.0 / (matrix[0, 0] * downsampling)
    array = np.moveaxis(np.asarray(pixels.values), 0, -1)[..., :3]
    attach_image(adata, array, scale)


def _largest_scale(element):
    return element["scale0"]["image"] if hasattr(element, "children") else element


def _smallest_scale_above(element, size: int):
    """The coarsest level of a multiscale image that is still at least ``size`` pixels across (or the finest)."""
    if not hasattr(element, "children"):
        return element
    levels = [element[name]["image"] for name in element.children]
    fitting = [level for level in levels if max(level.shape[-2:]) >= size]
    return min(fitting, key=lambda level: level.shape[-1]) if fitting else max(levels, key=lambda l: l.shape[-1])
