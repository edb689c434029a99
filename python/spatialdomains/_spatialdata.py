"""SpatialData (``.zarr``) in and out, through the ``spatialdata`` package (the optional extra
``spatialdomains[spatialdata]``).

Reading takes one table and places each row at the centroid of the shape, point or label it annotates, in one
coordinate system (chosen from the store unless asked), so the coordinates, the other elements and an image share
one frame; a table that annotates nothing with a position, or a Xenium table from spatialdata-io (µm centroids),
uses its own ``obsm['spatial']``. Stores from spatialdata-io's Visium, Visium HD and Xenium readers also say their
platform and coordinate unit, recorded as the folder readers record them. Writing puts the domains,
embeddings and the run's record into that table in a new store; the input store is never changed.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ._tenx import HD_DEFAULT_BIN_SIZE
from ._tissue_image import attach_image
from .errors import BackendUnavailable, InputError, option

logger = logging.getLogger("spatialdomains")

#: Where the reader notes the store and table a sample came from (what :func:`write_spatialdata` updates).
SOURCE_KEY = "spatialdata_source"
#: Results written back into the table: these ``obs`` columns, and every embedding ``obsm['X_<method>']``.
RESULT_COLUMNS = ("domain", "domain_unrefined")
RECORD_KEY = "spatialdomains"
#: A Visium HD store from spatialdata-io holds one table per bin size: 8 µm is read unless another is chosen, as
#: for a Space Ranger folder.
HD_DEFAULT_TABLE = f"square_{HD_DEFAULT_BIN_SIZE:03d}um"


def _spatialdata():
    try:
        import spatialdata
    except ImportError as error:
        raise BackendUnavailable(
            f"reading and writing SpatialData (.zarr) needs the spatialdata package ({error}): "
            "pip install 'spatialdomains[spatialdata]'") from None
    return spatialdata


def read_spatialdata(path: str | Path, *, table: str | None = None, coordinate_system: str | None = None,
                     image: str | bool = False) -> ad.AnnData:
    """Read one table of a SpatialData store as an AnnData with ``obsm['spatial']``.

    ``table``: which table; needed only when the store has several and none is a Visium HD store's
    ``square_008um`` (read by default, as for a Space Ranger folder). ``coordinate_system``: the frame of the
    positions; by default the only one the table's element lives in, else ``global``, else the one where the
    element is untransformed (spatialdata-io names it after the dataset). A Xenium store from spatialdata-io keeps
    each cell's centroid in µm in ``obsm['spatial']``: that is used instead of computing it from the label image.
    ``image``: True (the store's only image, or the largest of several) or an image's name, stored as the hires
    image when its transformation into the coordinate system is a scale (as for Visium); False (default) reads no
    pixels.
    """
    _spatialdata()
    path = Path(path)
    if not path.exists():
        raise InputError(f"input '{path}' does not exist")
    sdata = open_store(path)
    name = _table_name(sdata, table, path)
    adata = sdata.tables[name]
    reader = str(sdata.attrs.get("spatialdata_io_reader", "")) if hasattr(sdata, "attrs") else ""
    elements = _annotated_elements(sdata, adata)
    if reader == "xenium" and "spatial" in adata.obsm:  # spatialdata-io: x_centroid, y_centroid in µm
        if coordinate_system is not None:
            raise InputError(f"{option('coordinate_system', coordinate_system)}: table '{name}' of '{path}' is a "
                             "Xenium table, read at its cells' centroids in µm; leave the option out")
        system, positions, unit = None, np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2], 1.0
    elif elements:
        system = _coordinate_system(sdata, elements, coordinate_system, name, path)
        positions = _positions(sdata, adata, elements, system, name, path)
        unit = _unit(adata, positions, name, reader)
    elif "spatial" in adata.obsm:
        if coordinate_system is not None:
            raise InputError(f"{option('coordinate_system', coordinate_system)}: table '{name}' of '{path}' "
                             "annotates no element with positions (its obsm['spatial'] is used): leave the option out")
        system, positions, unit = None, np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2], None
    else:
        raise InputError(f"table '{name}' of '{path}' neither annotates shapes, points or labels of the store nor "
                         "has obsm['spatial']: the positions of its rows are needed")
    adata.obsm["spatial"] = positions
    adata.uns[SOURCE_KEY] = {"path": str(path.resolve()), "table": name,
                             **({"coordinate_system": system} if system else {})}
    _record_library(adata, path, name, reader, unit)
    if image:
        _attach_image(sdata, adata, image, system, path)
    return adata


def open_store(path: Path):
    """The SpatialData store at ``path`` (elements stay on disk until used), or an error naming the cause."""
    spatialdata = _spatialdata()
    try:
        with _quiet():
            return spatialdata.read_zarr(path)
    except Exception as error:  # noqa: BLE001 - zarr, ome-zarr and pydantic raise many types for a foreign store
        first = str(error).splitlines()[0] if str(error) else ""
        hint = "check that it was written by spatialdata and copied completely"
        zarr = _zarr_version()
        major = zarr.split(".")[0]
        if (path / "zarr.json").is_file() and not (major.isdigit() and int(major) >= 3):
            hint = (f"it is a zarr v3 store (spatialdata 0.6 or later), and this environment has zarr "
                    f"{zarr}: pip install -U 'spatialdomains[spatialdata]' (needs NumPy 2)")
        raise InputError(f"input '{path}' is not a readable SpatialData store ({type(error).__name__}: {first}); "
                         f"{hint}") from None


def _zarr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zarr")
    except PackageNotFoundError:
        return "none"


def write_spatialdata(adata: ad.AnnData, out: str | Path, *, source: str | Path | None = None,
                      table: str | None = None) -> Path:
    """Write the SpatialData store the AnnData came from to ``out`` (a new ``.zarr``), with the domains
    (``obs['domain']``, ``obs['domain_unrefined']``), the embeddings (``obsm['X_<method>']``) and the record
    (``uns['spatialdomains']``) added to its table. Rows are matched by name; the table's other contents and
    every other element are copied unchanged. ``source``/``table`` default to where :func:`read_spatialdata`
    read the AnnData from."""
    _spatialdata()
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
    sdata = open_store(source)
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
    """Hold spatialdata's, ome-zarr's and zarr's information messages back (format notes, the store's new path,
    zarr's notes on its future defaults): none is something a user of this package can act on."""
    quieter = {"spatialdata": logging.WARNING, "ome_zarr": logging.ERROR}  # ome-zarr warns of format versions
    loggers = [logging.getLogger(name) for name in quieter]
    levels = [item.level for item in loggers]
    for item, level in zip(loggers, quieter.values()):
        item.setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"(zarr|ome_zarr|spatialdata)")
            warnings.filterwarnings("ignore", message=r".*zarr v3 autosharding", category=UserWarning)
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
        if len(names) == 1:
            return names[0]
        if HD_DEFAULT_TABLE in names:
            logger.info("SpatialData store '%s': reading table '%s' of %s (%s chooses another)", path,
                        HD_DEFAULT_TABLE, ", ".join(names), option("table"))
            return HD_DEFAULT_TABLE
        raise InputError(f"SpatialData store '{path}' has {len(names)} tables ({', '.join(names)}): choose one "
                         f"with {option('table')}")
    if table not in names:
        raise InputError(f"{option('table', table)}: SpatialData store '{path}' has no such table (tables: "
                         f"{', '.join(names)})")
    return table


def _annotated_elements(sdata, adata: ad.AnnData) -> list[str]:
    """The shapes, points and labels of the store that the table's rows annotate."""
    attrs = adata.uns.get("spatialdata_attrs", {})
    regions = attrs.get("region")
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    if attrs.get("region_key") not in adata.obs or attrs.get("instance_key") not in adata.obs:
        return []
    return [region for region in regions if region in sdata and _has_positions(sdata[region])]


def _coordinate_system(sdata, elements: list[str], asked: str | None, name: str, path: Path) -> str:
    """The coordinate system to place the rows in: the one asked for, else the only one the annotated elements
    share, else 'global', else the one they are untransformed in; an error naming the choices otherwise."""
    from spatialdata.transformations import Identity, get_transformation

    shared = None
    for element in elements:
        systems = set(get_transformation(sdata[element], get_all=True))
        shared = systems if shared is None else shared & systems
    shared = sorted(shared or [])
    where = f"table '{name}' of '{path}' annotates {', '.join(elements)}"
    if asked is not None:
        if asked not in shared:
            raise InputError(f"{option('coordinate_system', asked)}: {where}, which {'is' if len(elements) == 1 else 'are'}"
                             f" placed in {', '.join(shared) or 'no coordinate system'}; choose one of those")
        return asked
    if len(shared) == 1:
        return shared[0]
    if "global" in shared:
        return "global"
    untransformed = [system for system in shared
                     if all(isinstance(get_transformation(sdata[e], to_coordinate_system=system), Identity)
                            for e in elements)]
    if len(untransformed) == 1:
        return untransformed[0]
    raise InputError(f"{where}, placed in {len(shared)} coordinate systems ({', '.join(shared)}): choose one with "
                     f"{option('coordinate_system')}")


def _positions(sdata, adata: ad.AnnData, elements: list[str], system: str, name: str, path: Path) -> np.ndarray:
    """Each row's centroid in ``system``, from the element it annotates."""
    from spatialdata import get_centroids
    from spatialdata.models import Labels2DModel, get_model

    attrs = adata.uns["spatialdata_attrs"]
    region_key, instance_key = attrs["region_key"], attrs["instance_key"]
    positions = np.full((adata.n_obs, 2), np.nan)
    for region in elements:
        rows = (adata.obs[region_key].astype(str) == region).to_numpy()
        element = sdata[region]
        if get_model(element) is Labels2DModel:
            centroids = _label_centroids(element, system)
        else:
            centroids = get_centroids(element, coordinate_system=system)
            centroids = centroids.compute() if hasattr(centroids, "compute") else centroids
        wanted = adata.obs[instance_key].to_numpy()[rows]
        found = centroids.reindex(wanted)
        if found.isna().any().any():
            raise InputError(f"{int(found.isna().any(axis=1).sum())} rows of table '{name}' annotate instances "
                             f"missing from element '{region}' of '{path}': the table and the element disagree")
        positions[rows] = found[["x", "y"]].to_numpy(dtype=np.float64)
    return positions


def _label_centroids(element, system: str) -> pd.DataFrame:
    """The centroid of each label of a 2-D label image in ``system``, in one pass over its chunks (each pixel is
    read once; memory grows with the number of labels, not with the image)."""
    import dask
    from spatialdata.transformations import get_transformation

    pixels = _largest_scale(element).data
    totals = None
    for block_index in np.ndindex(*pixels.numblocks):
        block = np.asarray(dask.compute(pixels.blocks[block_index])[0])
        offset = [sum(pixels.chunks[axis][:block_index[axis]]) for axis in range(2)]
        labels = block.ravel().astype(np.int64)
        rows, cols = np.indices(block.shape).reshape(2, -1)
        size = int(labels.max()) + 1 if labels.size else 1
        sums = np.stack([np.bincount(labels, minlength=size).astype(np.float64),
                         np.bincount(labels, weights=cols + offset[1] + 0.5, minlength=size),
                         np.bincount(labels, weights=rows + offset[0] + 0.5, minlength=size)])
        if totals is None or totals.shape[1] < size:
            grown = np.zeros((3, size if totals is None else max(size, totals.shape[1])))
            if totals is not None:
                grown[:, :totals.shape[1]] = totals
            totals = grown
        totals[:, :size] += sums
    present = np.flatnonzero(totals[0] > 0)
    present = present[present > 0]  # 0 is the background
    xy = np.column_stack([totals[1, present] / totals[0, present], totals[2, present] / totals[0, present]])
    matrix = get_transformation(element, to_coordinate_system=system).to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y"))
    placed = xy @ matrix[:2, :2].T + matrix[:2, 2]
    return pd.DataFrame(placed, index=present, columns=["x", "y"])


def _unit(adata: ad.AnnData, positions: np.ndarray, name: str, reader: str) -> float | None:
    """Micrometres per coordinate unit where the layout says: a spatialdata-io Visium HD table's bins (named
    ``square_NNNum``) or a classic Visium table's spots on their array grid."""
    from ._tenx import VISIUM_SPOT_SPACING_UM, _BIN_FOLDER, grid_microns_per_pixel

    if not {"array_row", "array_col"} <= set(adata.obs):
        return None
    rows, cols = (pd.to_numeric(adata.obs[key], errors="coerce") for key in ("array_row", "array_col"))
    bins = _BIN_FOLDER.match(name)
    if reader == "visium_hd" and bins:
        return grid_microns_per_pixel(rows, cols, positions, float(bins.group(1)))
    if reader == "visium":
        return grid_microns_per_pixel(rows, cols, positions, VISIUM_SPOT_SPACING_UM / 2)
    return None


def _record_library(adata: ad.AnnData, path: Path, name: str, reader: str, unit: float | None) -> None:
    """Say in ``uns['spatial']`` what the store says: its platform, bin size and coordinate unit."""
    from ._tenx import _BIN_FOLDER

    platform = {"visium": "Visium", "visium_hd": "Visium HD", "xenium": "Xenium"}.get(reader)
    bins = _BIN_FOLDER.match(name)
    metadata = {"source": f"{path.name}:{name}", "platform": platform, "coordinate_unit_um": unit,
                "bin_size_um": int(bins.group(1)) if bins and reader == "visium_hd" else None}
    libraries = dict(adata.uns.get("spatial") or {})
    library = next(iter(libraries), path.stem)
    entry = dict(libraries.get(library, {}))
    known = {key: value for key, value in metadata.items() if value is not None}
    entry["metadata"] = {**(entry.get("metadata") or {}), **known}
    entry.setdefault("images", {})
    entry.setdefault("scalefactors", {})
    adata.uns["spatial"] = {**libraries, library: entry}


def _has_positions(element) -> bool:
    from spatialdata.models import get_model, Image2DModel, Image3DModel

    return get_model(element) not in (Image2DModel, Image3DModel)


def _attach_image(sdata, adata: ad.AnnData, image: str | bool, coordinate_system: str | None, path: Path) -> None:
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
    if coordinate_system is None:
        raise InputError(f"image '{chosen}' of '{path}' cannot be placed: the table's positions are not in one of "
                         "the store's coordinate systems; leave out the image, or give one as a file with its scale")
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
