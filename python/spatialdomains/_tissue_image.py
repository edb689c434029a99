"""Tissue images: read from a file, and stored in an AnnData as scanpy and squidpy keep them (``uns['spatial']``).

Below both the readers (:mod:`spatialdomains.io`, the SpatialData reader) and the image features, which all use it.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from .errors import InputError


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/TIFF tissue image as an RGB uint8 array (whole-slide sizes allowed)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image: '{path}' does not exist")
    Image.MAX_IMAGE_PIXELS = None  # H&E slides are legitimately larger than PIL's decompression-bomb guard
    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert("RGB"))
    except OSError as error:
        raise InputError(f"could not read image '{path}': {error}") from error


def attach_image(adata: ad.AnnData, image, scale: float, *, fiducial_diameter: float | None = None) -> None:
    """Store ``image`` (array or file) as the 'hires' image of the AnnData's first ``uns['spatial']`` library
    (created as 'image' when there is none), at ``scale`` image pixels per ``obsm['spatial']`` unit."""
    pixels = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
    libraries = adata.uns.get("spatial", {})
    library = next(iter(libraries), "image")
    entry = dict(libraries.get(library, {}))
    factors = {**entry.get("scalefactors", {}), "tissue_hires_scalef": float(scale)}
    if fiducial_diameter is not None:
        factors["fiducial_diameter_fullres"] = float(fiducial_diameter)
    adata.uns["spatial"] = {library: {**entry, "images": {"hires": pixels}, "scalefactors": factors}}
