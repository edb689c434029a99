"""Reading and writing spatial data, and the checks every input passes on its way in.

Layout follows scanpy/squidpy: ``obsm['spatial']`` holds full-resolution (x, y) pixel coordinates and
``uns['spatial'][library_id]`` holds ``images`` and ``scalefactors``. Readers never modify the user's files;
writers replace their target atomically.
"""
from __future__ import annotations

import contextlib
import io as io_module
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import _tenx
from ._rds import read_rds, write_rds  # noqa: F401  (public: sd.io.read_rds, sd.io.write_rds)
from ._spatialdata import SOURCE_KEY as STORE_SOURCE_KEY  # noqa: F401  (where a store's table is noted)
from ._spatialdata import read_spatialdata, write_spatialdata  # noqa: F401  (public: sd.io.read_spatialdata, ...)
from ._tenx import read_visium, read_visium_hd, read_xenium  # noqa: F401  (public: sd.io.read_visium, ...)
from ._tissue_image import attach_image, read_image  # noqa: F401  (public: sd.io.read_image, sd.io.attach_image)
from ._utils import atomic_path, json_safe
from .errors import InputError, option

logger = logging.getLogger("spatialdomains")

def read(path: str | Path, *, bin_size: int | str | None = None, table: str | None = None,
         coordinate_system: str | None = None) -> ad.AnnData:
    """Read a sample, choosing the reader from the path.

    Reads an ``.h5ad`` or ``.rds`` file, a SpatialData ``.zarr`` store (one of its tables), or the output folder
    of Space Ranger (Visium), Space Ranger for Visium HD, or Xenium Onboard Analysis.

    Parameters
    ----------
    path : str or pathlib.Path
        The file or folder to read.
    bin_size : int or str or None, optional
        For Visium HD: 2, 8 or 16 µm (default 8), the run's custom size, or ``"cells"``.
    table, coordinate_system : str or None, optional
        For a SpatialData store: the table to read (default: the only one, or a Visium HD store's
        ``square_008um``) and the coordinate system of the positions (default: chosen from the store); see
        :func:`read_spatialdata`.

    Returns
    -------
    anndata.AnnData
        The sample.

    Raises
    ------
    InputError
        When the path does not exist or is not a file or folder this package reads.
    """
    problems = store_option_problems([path], table, coordinate_system)
    if problems:
        raise InputError(problems[0])
    path = input_path(path, bin_size)
    if path.suffix.lower() == ".zarr":
        return read_spatialdata(path, table=table, coordinate_system=coordinate_system)
    platform = _tenx.platform_of(path) if path.is_dir() else None
    if path.is_dir():
        if platform == "visium_hd":
            return _tenx.read_visium_hd(path)
        if platform == "xenium":
            return _tenx.read_xenium(path)
        if platform == "visium":
            return _tenx.read_visium(path)
        raise InputError(f"input folder '{path}' is not an output folder this package reads: give the outs/ folder "
                         f"of Space Ranger (with {_tenx.COUNT_FILE} and spatial/, or binned_outputs/ for Visium HD), "
                         f"or a Xenium output folder (with {_tenx.XENIUM_MANIFEST} and {_tenx.XENIUM_COUNT_FILE})")
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return read_h5ad(path)
    if path.name in (_tenx.COUNT_FILE, _tenx.HD_CELL_COUNT_FILE):
        if _tenx.platform_of(path.parent) == "visium_hd":  # a bin's (or the segmented cells') own count file
            return _tenx.read_visium_hd(path.parent)
        if path.name == _tenx.COUNT_FILE:
            return read_visium(path.parent)
    if path.name == _tenx.XENIUM_MANIFEST:
        return _tenx.read_xenium(path)
    if suffix == ".rds":
        return read_rds(path)
    if suffix == ".h5mu":
        raise InputError(f"input '{path}' is an .h5mu file, which holds paired omics of one section: use "
                         f"{option('method', 'spami')} (or 'baseline') to find domains from all its modalities")
    raise InputError(
        f"input '{path}': unknown file type '{suffix}'; give an .h5ad file, an .rds file (SingleCellExperiment, "
        f"SpatialExperiment or Seurat), a SpatialData .zarr, or the output folder of Space Ranger (Visium, "
        f"Visium HD) or Xenium"
    )


def read_each(paths, *, table: str | None = None, coordinate_system: str | None = None) -> list[ad.AnnData]:
    """:func:`read` each path; the store options apply to the SpatialData stores among them.

    Parameters
    ----------
    paths : list of str or pathlib.Path
        The inputs.
    table, coordinate_system : str or None, optional
        As for :func:`read`; an error when given and no input is a ``.zarr`` store.

    Returns
    -------
    list of anndata.AnnData
        One per path, in order.
    """
    problems = store_option_problems(paths, table, coordinate_system)
    if problems:
        raise InputError(problems[0])
    store = {"table": table, "coordinate_system": coordinate_system}
    return [read(path, **(store if Path(path).suffix.lower() == ".zarr" else {})) for path in paths]


def store_option_problems(paths, table: str | None, coordinate_system: str | None) -> list[str]:
    """The options of a SpatialData store given without one among the inputs.

    Parameters
    ----------
    paths : list of str or pathlib.Path
        The inputs.
    table, coordinate_system : str or None
        The store options given.

    Returns
    -------
    list of str
        One problem per option given in vain, in the words of the interface in use; empty when none.
    """
    if any(Path(path).suffix.lower() == ".zarr" for path in paths):
        return []
    return [f"{option(name, value)} applies to SpatialData .zarr inputs, and no input is one: leave it out"
            for name, value in (("table", table), ("coordinate_system", coordinate_system)) if value is not None]


def input_path(path: str | Path, bin_size: int | str | None = None) -> Path:
    """The file or folder :func:`read` reads for ``path``.

    Checks that it exists, before any work.

    Parameters
    ----------
    path : str or pathlib.Path
        The input as given.
    bin_size : int or str or None, optional
        For a Visium HD output: selects its bin folder (or ``segmented_outputs``).

    Returns
    -------
    pathlib.Path
        The path to read.

    Raises
    ------
    InputError
        When the path does not exist, or ``bin_size`` is given for a folder that is not Visium HD.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input '{path}' does not exist: give an .h5ad file, an .rds file, a SpatialData .zarr or "
                         "the output folder of Space Ranger (Visium, Visium HD) or Xenium")
    if bin_size is None:
        return path
    platform = _tenx.platform_of(path) if path.is_dir() else None
    if platform != "visium_hd":
        kind = {"visium": "a Visium (not HD) folder", "xenium": "a Xenium folder"}.get(platform, "not one")
        raise InputError(f"{option('bin_size')} applies to Visium HD output folders; '{path}' is {kind}: leave "
                         f"{option('bin_size')} out")
    return _tenx.visium_hd_folder(path, bin_size)


def read_h5ad(path: str | Path) -> ad.AnnData:
    """Read an AnnData file into memory (the file itself is only read).

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.h5ad`` file.

    Returns
    -------
    anndata.AnnData
        The data.
    """
    try:
        return ad.read_h5ad(Path(path))
    except OSError as error:  # h5py's message alone does not say which file or what to do
        raise InputError(f"input '{path}' is not a readable .h5ad file ({error}); check that it was copied "
                         "completely and written by anndata") from error


def read_h5mu(path: str | Path):
    """Read a MuData file (paired omics on the same spots, ``.h5mu``) into memory.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.h5mu`` file.

    Returns
    -------
    mudata.MuData
        The data, with at least one modality and one spot.
    """
    import mudata

    path = Path(path)
    if not path.exists():
        raise InputError(f"input '{path}' does not exist")
    try:
        with mudata.set_options(pull_on_update=False):
            mdata = mudata.read_h5mu(path)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"input '{path}' is not a readable .h5mu file ({str(error).splitlines()[0]}); check that "
                         "it was copied completely and written by mudata") from None
    if not mdata.mod or mdata.n_obs == 0:
        raise InputError(f"input '{path}' holds no {'modalities' if not mdata.mod else 'spots'}: an .h5mu for "
                         "paired omics needs two modalities (e.g. 'rna' and 'adt') measured on the same spots")
    return mdata


# ---------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class CheckedInput:
    """What a model needs from an AnnData after validation. ``spots`` marks the rows kept from the input."""

    counts: sp.csr_matrix
    coordinates: np.ndarray
    spots: np.ndarray
    gene_names: pd.Index


def check_input(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    require_counts: bool = True,
    n_neighbors: int = 5,
    min_genes: int = 10,
) -> CheckedInput:
    """Validate expression and coordinates; return float32 counts, coordinates and the spots kept.

    Errors name the field and the fix. Spots with zero total counts cannot be normalised. They are left out
    (a documented filter, logged) and receive no embedding or domain. The AnnData is not modified.

    Parameters
    ----------
    adata : anndata.AnnData
        Expression in ``X`` (or ``layers[layer]``) and coordinates in ``obsm['spatial']``.
    layer : str or None, optional
        The layer that holds the expression; None uses ``X``.
    require_counts : bool, optional
        Refuse non-integer values, which look normalised.
    n_neighbors : int, optional
        The spatial graph's neighbours: more spots with counts than this are needed.
    min_genes : int, optional
        The fewest genes with any counts in the kept spots.

    Returns
    -------
    CheckedInput
        The counts and coordinates of the kept spots, the mask of those spots, and the gene names.

    Raises
    ------
    InputError
        When the input cannot be used, with the reason and the fix.
    """
    if not isinstance(adata, ad.AnnData):
        raise InputError(f"expected an AnnData object, got {type(adata).__name__}")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"the AnnData is empty ({adata.n_obs} spots × {adata.n_vars} genes)")
    _check_unique_names(adata.obs_names, "obs_names (spot barcodes)", "adata.obs_names_make_unique()")
    _check_unique_names(adata.var_names, "var_names (genes)", "adata.var_names_make_unique()")
    coordinates = spatial_coordinates(adata)

    matrix = _expression(adata, layer)
    where = f"layers['{layer}']" if layer else "X"
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{where} contains NaN or infinite values: remove or fix those entries")
    if values.size and values.min() < 0:
        raise InputError(
            f"{where} contains negative values (min {values.min():.3g}): raw counts are required; "
            f"pass the raw count matrix (e.g. {option('layer', 'counts')})"
        )
    if require_counts and values.size and not np.all(values == np.round(values)):
        example = values[values != np.round(values)][0]
        raise InputError(
            f"{where} contains non-integer values (e.g. {example:.4g}), so it looks normalised; this method needs "
            f"raw counts: pass the raw count layer with {option('layer', 'counts')} (or the raw AnnData)"
        )
    counts = sp.csr_matrix(matrix, dtype=np.float32)

    totals = np.asarray(counts.sum(axis=1)).ravel()
    spots = totals > 0
    n_empty = int((~spots).sum())
    if n_empty:
        logger.warning("leaving out %d of %d spots with zero total counts (they get no embedding or domain)",
                       n_empty, adata.n_obs)
    n_kept = int(spots.sum())
    if n_kept <= n_neighbors:
        raise InputError(
            f"only {n_kept} spots with counts, but the spatial graph needs more than n_neighbors={n_neighbors}: "
            "use a smaller n_neighbors or a larger sample"
        )
    expressed = np.asarray((counts[spots] > 0).sum(axis=0)).ravel() > 0
    if int(expressed.sum()) < min_genes:
        raise InputError(
            f"only {int(expressed.sum())} genes have any counts in the kept spots (at least {min_genes} needed): "
            "check that X holds expression and not an empty or filtered matrix"
        )
    return CheckedInput(counts=counts[spots], coordinates=coordinates[spots], spots=spots,
                        gene_names=adata.var_names)


def spatial_coordinates(adata: ad.AnnData, key: str = "spatial", rows: np.ndarray | None = None) -> np.ndarray:
    """Return ``obsm[key]`` as an (n_spots, 2) float array, after checking it exists and is finite.

    A third column is accepted only when it is constant (z = 0, say). The spatial graphs are 2-D, so a varying
    z is refused rather than silently dropped.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the coordinates.
    key : str, optional
        The ``obsm`` key of the coordinates.
    rows : numpy.ndarray or None, optional
        A boolean mask: only those spots are returned and checked (e.g. the spots that have an embedding,
        when paired omics left some spots out).

    Returns
    -------
    numpy.ndarray
        The (x, y) of each spot (of each spot in ``rows``).

    Raises
    ------
    InputError
        When the coordinates are missing, not numeric, not 2-D, or not finite.
    """
    if key not in adata.obsm:
        raise InputError(
            f"obsm['{key}'] is missing: store the spot coordinates (x, y) there, e.g. "
            f"adata.obsm['{key}'] = adata.obs[['x', 'y']].to_numpy()"
        )
    try:
        coordinates = np.asarray(adata.obsm[key], dtype=np.float64)  # an array, or a numeric DataFrame
    except (TypeError, ValueError):
        raise InputError(f"obsm['{key}'] must hold numbers (x, y); it holds {type(adata.obsm[key]).__name__} "
                         "values that are not numeric") from None
    if coordinates.ndim != 2 or coordinates.shape[1] < 2:
        raise InputError(f"obsm['{key}'] must have two columns (x, y); it has shape {coordinates.shape}")
    extra = coordinates[:, 2:]
    finite_extra = extra[np.isfinite(extra).all(axis=1)]
    if finite_extra.size and np.ptp(finite_extra, axis=0).max() > 0:
        raise InputError(
            f"obsm['{key}'] has {coordinates.shape[1]} columns and the third varies (from {finite_extra[:, 0].min():g}"
            f" to {finite_extra[:, 0].max():g}): domains are found on 2-D sections. Give each section as its own "
            f"slice with (x, y) (several inputs, or {option('batch_key')} naming the section), or keep only x and y "
            f"(adata.obsm['{key}'] = adata.obsm['{key}'][:, :2])"
        )
    coordinates = coordinates[:, :2]
    names = adata.obs_names
    if rows is not None:
        coordinates, names = coordinates[rows], names[rows]
    bad = ~np.all(np.isfinite(coordinates), axis=1)
    if bad.any():
        examples = ", ".join(map(str, names[bad][:3]))
        raise InputError(
            f"obsm['{key}'] has missing or non-finite coordinates for {int(bad.sum())} spots (e.g. {examples}): "
            "drop those spots (adata = adata[np.isfinite(adata.obsm['spatial']).all(1)].copy()) or fix them"
        )
    return coordinates


def coordinate_unit_um(adata: ad.AnnData) -> float | None:
    """Micrometres per ``obsm['spatial']`` unit, when the input says.

    Taken from the reader's record, else the scale factors' ``microns_per_pixel``, else, for classic Visium, the
    spots' array grid (``obs['array_row']``, ``obs['array_col']``: neighbours are 100 µm apart) or 65 µm over
    ``spot_diameter_fullres`` (see :func:`spatialdomains._tenx.visium_microns_per_pixel`).

    Parameters
    ----------
    adata : anndata.AnnData
        Holds ``uns['spatial']``.

    Returns
    -------
    float or None
        The unit in µm; None when unknown or when the slices disagree.
    """
    units = set()
    libraries = [library for library in (adata.uns.get("spatial") or {}).values() if isinstance(library, dict)]
    # one library: its spots are all the rows, so their array grid can be fitted (slices have frames of their own)
    grid = len(libraries) == 1 and {"array_row", "array_col"} <= set(adata.obs) and "spatial" in adata.obsm
    for library in libraries:
        metadata, factors = library.get("metadata") or {}, library.get("scalefactors") or {}
        unit = metadata.get("coordinate_unit_um", factors.get("microns_per_pixel"))
        if unit is None and factors.get("spot_diameter_fullres") and "bin_size_um" not in factors:
            rows = adata.obs["array_row"] if grid else np.full(adata.n_obs, np.nan)
            columns = adata.obs["array_col"] if grid else np.full(adata.n_obs, np.nan)
            positions = adata.obsm["spatial"] if grid else np.zeros((adata.n_obs, 2))
            unit = _tenx.visium_microns_per_pixel(pd.to_numeric(rows, errors="coerce"),
                                                  pd.to_numeric(columns, errors="coerce"), positions, factors)
        units.add(None if unit is None else round(float(unit), 9))
    return units.pop() if len(units) == 1 else None


def platform(adata: ad.AnnData) -> str | None:
    """The 10x platform the AnnData was read from, when it says.

    Space Ranger data read by scanpy counts as 'Visium'.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds ``uns['spatial']``.

    Returns
    -------
    str or None
        'Visium', 'Visium HD' or 'Xenium'; None when unknown.
    """
    for library in (adata.uns.get("spatial") or {}).values():
        metadata = library.get("metadata") or {} if isinstance(library, dict) else {}
        if metadata.get("platform"):
            return str(metadata["platform"])
        if str(metadata.get("software_version", "")).startswith("spaceranger"):
            return "Visium HD" if "bin_size_um" in (library.get("scalefactors") or {}) else "Visium"
    return None


def spatial_scale(adata: ad.AnnData, coordinates: np.ndarray, slice_codes: np.ndarray | None = None) -> dict:
    """What the record says about the coordinates.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds ``uns['spatial']``.
    coordinates : numpy.ndarray
        The spots' (x, y).
    slice_codes : numpy.ndarray or None, optional
        Each spot's slice, so that neighbours are sought within a slice.

    Returns
    -------
    dict
        The platform, µm per unit, lattice or irregular, and the median spacing between neighbours in
        coordinate units and, where the unit is known, in µm. Unknown values are left out.
    """
    from .graph import spacing

    unit = coordinate_unit_um(adata)
    scale = {"platform": platform(adata), "unit_um": unit, **spacing(coordinates, slice_codes)}
    if unit is not None:
        scale["median_spacing_um"] = scale["median_spacing"] * unit
    return {key: value for key, value in scale.items() if value is not None}


def check_positions(coordinates: np.ndarray, where: str = "") -> None:
    """Refuse coordinates a spatial graph cannot use: all spots at one place, or most spots sharing positions.

    Checked per slice: different slices may reuse the same positions.

    Parameters
    ----------
    coordinates : numpy.ndarray
        The (x, y) of one slice's spots.
    where : str, optional
        Names the slice in the message.

    Raises
    ------
    InputError
        When the positions cannot give each spot its own neighbours.
    """
    n_spots = len(coordinates)
    if n_spots < 2:
        return
    of = f" of slice {where}" if where else ""
    spread = np.ptp(coordinates, axis=0)
    scale = max(float(np.abs(coordinates).max()), 1.0)
    if spread.max() <= 1e-9 * scale:
        x, y = coordinates[0]
        raise InputError(f"all {n_spots} spots{of} are at the same position ({x:g}, {y:g}): obsm['spatial'] must "
                         "hold each spot's own (x, y), so that neighbouring spots can be found")
    n_distinct = len(np.unique(coordinates, axis=0))
    if n_distinct < 3 or n_distinct < n_spots / 2:
        raise InputError(f"the {n_spots} spots{of} have only {n_distinct} distinct positions: obsm['spatial'] "
                         "must hold each spot's own (x, y), not a shared or rounded value (e.g. a region's centre)")


def _expression(adata: ad.AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        available = ", ".join(adata.layers.keys()) or "none"
        raise InputError(f"layers['{layer}'] does not exist (available layers: {available})")
    return adata.layers[layer]


def _check_unique_names(names: pd.Index, field: str, fix: str) -> None:
    if not names.is_unique:
        duplicated = names[names.duplicated()].unique()
        raise InputError(
            f"{field} has {len(duplicated)} duplicated values (e.g. '{duplicated[0]}'): make them unique with {fix}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Writers (atomic)
# ---------------------------------------------------------------------------------------------------------------

def write_h5ad(adata: ad.AnnData, path: str | Path) -> Path:
    """Write ``adata`` to ``path`` atomically (compressed).

    Parameters
    ----------
    adata : anndata.AnnData
        The data to write.
    path : str or pathlib.Path
        The ``.h5ad`` file to write.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp, _hdf5_writing():
        adata.write_h5ad(tmp, compression="gzip")
    return path


def write_h5mu(mdata, path: str | Path) -> Path:
    """Write a MuData to ``path`` atomically.

    Parameters
    ----------
    mdata : mudata.MuData
        The data to write.
    path : str or pathlib.Path
        The ``.h5mu`` file to write.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    import mudata

    path = Path(path)
    with atomic_path(path) as tmp, mudata.set_options(pull_on_update=False), _hdf5_writing():
        mdata.write_h5mu(tmp)
    return path


@contextlib.contextmanager
def _hdf5_writing():
    """Hold back what is printed during an HDF5 write: when the disk fills, h5py prints hundreds of tracebacks
    from its object finalisers before raising one OSError, which is the only thing worth reporting."""
    captured = io_module.StringIO()
    with contextlib.redirect_stderr(captured):
        yield
    sys.stderr.write(captured.getvalue())


def write_csv(table: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """Write a table as CSV atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        The table to write.
    path : str or pathlib.Path
        The file to write.
    **kwargs
        Passed to :meth:`pandas.DataFrame.to_csv` (e.g. ``index=False``).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, **kwargs)
    return path


def write_json(record: dict, path: str | Path) -> Path:
    """Write a JSON record atomically (NumPy values converted).

    Parameters
    ----------
    record : dict
        The record to write.
    path : str or pathlib.Path
        The file to write.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(record), indent=2, sort_keys=True) + "\n")
    return path


#: The column names of ``clusters.csv`` as each viewer imports it: Loupe Browser (Visium, Visium HD) takes
#: ``Barcode`` and a category name; Xenium Explorer takes ``cell_id`` and ``group``.
CLUSTER_HEADERS = {"loupe": ("Barcode", None), "xenium": ("cell_id", "group")}
CLUSTERS_FILE = "clusters.csv"


def write_clusters(adata: ad.AnnData, path: str | Path, key: str = "domain", *, viewer: str = "auto") -> Path:
    """Write ``obs[key]`` as a CSV that Loupe Browser or Xenium Explorer imports as cell groups.

    One row per barcode that has a value. Spots left out of the analysis have none and are not listed.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the groups.
    path : str or pathlib.Path
        The CSV file to write.
    key : str, optional
        The ``obs`` column of the groups.
    viewer : str, optional
        'loupe' (header ``Barcode,<key>``), 'xenium' (header ``cell_id,group``) or 'auto' (Xenium Explorer
        for Xenium input, else Loupe). Space Ranger ships Visium HD's Loupe files for the 8 µm bins, a custom
        bin size and segmented cells: the 2 and 16 µm bins are written for the 8 µm bins (see
        :func:`spatialdomains._tenx.loupe_bins`).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if key not in adata.obs:
        raise InputError(f"obs['{key}'] does not exist (obs columns: {', '.join(adata.obs)}): find the domains "
                         "first, or name the column that holds them")
    if viewer == "auto":
        viewer = "xenium" if platform(adata) == "Xenium" else "loupe"
    if viewer not in CLUSTER_HEADERS:
        raise InputError(f"viewer '{viewer}' is not one of auto, {', '.join(CLUSTER_HEADERS)}")
    id_column, group_column = CLUSTER_HEADERS[viewer]
    values = adata.obs[key]
    present = values.notna().to_numpy()
    ids, labels = adata.obs_names[present], values[present].astype(str).to_numpy()
    size, bins = _hd_bins(adata)
    if viewer == "loupe" and size in _tenx.HD_BIN_SIZES and size != _tenx.HD_LOUPE_BIN_SIZE:
        mapped = _tenx.loupe_bins(ids, labels, size, bins)
        logger.info("%s: the %d µm bins' domains are written for the 8 µm bins of Loupe Browser's file (%d rows)",
                    Path(path).name, size, len(mapped))
        ids, labels = mapped["barcode"].to_numpy(), mapped["label"].to_numpy()
    table = pd.DataFrame({id_column: ids, group_column or key: labels})
    return write_csv(table, path, index=False)


def _hd_bins(adata: ad.AnnData) -> tuple:
    """A Visium HD sample's bin size and its run's binned_outputs folder, as its reader recorded them."""
    for library in (adata.uns.get("spatial") or {}).values():
        metadata = (library.get("metadata") or {}) if isinstance(library, dict) else {}
        if metadata.get("platform") == "Visium HD":
            size = metadata.get("bin_size_um")
            return (int(size) if str(size).isdigit() else size), metadata.get("binned_outputs")
    return None, None
