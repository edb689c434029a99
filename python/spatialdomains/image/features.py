"""Spot image features for STAIG: patches → published filter → BYOL-trained ResNet → z-score → PCA.

:func:`extract_features` runs the whole pipeline on one tissue image; :func:`reduce_features` is its last step
alone (also used for features the user brings). :func:`find_image` picks the best image an AnnData holds.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._utils import Timer
from ..errors import InputError
from ..io import read_image
from ..pp import zscore
from . import byol as _byol
from .filters import BORDER_MODES, FilterSettings, filter_patches
from .patches import crop_patches, patch_side

logger = logging.getLogger("spatialdomains")

#: Preference order of the images scanpy-style AnnData may hold, with their scale-factor names.
RESOLUTIONS = (("fullres", None), ("hires", "tissue_hires_scalef"), ("lowres", "tissue_lowres_scalef"))


@dataclass
class TissueImage:
    """An RGB(A) or grey image, its pixels per coordinate unit of ``obsm['spatial']`` and where it came from."""

    pixels: np.ndarray
    scale: float
    fiducial_diameter: float | None
    source: str


@dataclass(frozen=True)
class ImageFeatureSettings:
    """Everything that shapes the features; two runs with equal settings give the same features."""

    backbone: str = "resnet50"
    weights: str | None = None
    input_px: int = 256
    byol_epochs: int = 1
    batch_size: int = 43
    learning_rate: float = 3e-4
    patch_factor: float = 3.5
    border: str = "pad"
    filter: FilterSettings = field(default_factory=FilterSettings)
    n_components: int = 64
    random_state: int = 42

    def as_record(self) -> dict:
        record = asdict(self)
        record["filter"] = {**asdict(self.filter), "box": list(self.filter.box)}
        record["weights"] = "random initialisation" if self.weights is None else Path(self.weights).name
        return record


def find_image(adata, image=None, image_scale: float | None = None, library_id: str | None = None) -> TissueImage | None:
    """The image to cut patches from: ``image`` (array or file, ``image_scale`` pixels per coordinate unit,
    1 = full resolution) if given, else the best of ``uns['spatial'][library_id]['images']`` (full-res, hires,
    lowres) with its scale factor; None when there is none."""
    libraries = adata.uns.get("spatial", {}) if hasattr(adata, "uns") else {}
    if library_id is None and len(libraries) == 1:
        library_id = next(iter(libraries))
    library = libraries.get(library_id, {}) if library_id is not None else {}
    scalefactors = dict(library.get("scalefactors", {}))
    diameter = scalefactors.get("fiducial_diameter_fullres")
    diameter = float(diameter) if diameter is not None else None
    if image is not None:
        if image_scale is not None and image_scale <= 0:
            raise InputError(f"image_scale must be positive, got {image_scale}")
        scale = 1.0 if image_scale is None else float(image_scale)
        if isinstance(image, (str, Path)):
            return TissueImage(read_image(image), scale, diameter, f"file {Path(image).name}")
        return TissueImage(np.asarray(image), scale, diameter, "array given")
    if library_id is not None and library_id not in libraries:
        raise InputError(f"library_id '{library_id}' is not in uns['spatial'] (libraries: {', '.join(libraries)})")
    images = library.get("images", {})
    for resolution, factor_name in RESOLUTIONS:
        if resolution in images:
            if factor_name is not None and factor_name not in scalefactors:
                raise InputError(f"uns['spatial']['{library_id}'] has a {resolution} image but no scale factor "
                                 f"'{factor_name}': add it or pass image= and image_scale= explicitly")
            scale = 1.0 if factor_name is None else float(scalefactors[factor_name])
            return TissueImage(np.asarray(images[resolution]), scale, diameter, resolution)
    return None


def filtered_patches(tissue: TissueImage, coordinates: np.ndarray, settings: ImageFeatureSettings, *,
                     device: torch.device, batch_size: int = 32, progress: bool = True) -> tuple[torch.Tensor, int]:
    """Filtered grey patches at the backbone's input size (n × input_px × input_px, uint8) and the crop side."""
    from tqdm.auto import tqdm

    if settings.border not in BORDER_MODES:
        raise InputError(f"border must be one of {BORDER_MODES}, got '{settings.border}'")
    side = patch_side(tissue.scale, tissue.fiducial_diameter, coordinates, settings.patch_factor)
    centres = np.asarray(coordinates, dtype=np.float64) * tissue.scale
    out = torch.empty((len(centres), settings.input_px, settings.input_px), dtype=torch.uint8)
    first = 0
    with tqdm(total=len(centres), desc="image patches", disable=not progress) as bar:
        for rgb, inside in crop_patches(tissue.pixels, centres, side, batch_size=batch_size):
            grey = filter_patches(rgb.to(device), settings.filter, settings.input_px,
                                  inside.to(device) if settings.border == "truncate" else None)
            out[first:first + len(grey)] = grey.to(torch.uint8).cpu()
            first += len(grey)
            bar.update(len(grey))
    return out, side


def reduce_features(features: np.ndarray, n_components: int = 64, random_state: int = 42) -> tuple[np.ndarray, float]:
    """z-score each feature (constant ones become 0), then PCA; the components and their explained variance."""
    from sklearn.decomposition import PCA

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or not np.all(np.isfinite(features)):
        raise InputError(f"image features must be a finite spots × features matrix, got shape {features.shape}")
    standardised = zscore(features)
    n_components = min(n_components, *standardised.shape)
    pca = PCA(n_components=n_components, random_state=random_state)
    reduced = pca.fit_transform(standardised).astype(np.float32)
    return reduced, float(pca.explained_variance_ratio_.sum())


def extract_features(tissues: list[TissueImage], coordinates: list[np.ndarray], settings: ImageFeatureSettings, *,
                     device: torch.device, progress: bool = True) -> tuple[list[np.ndarray], dict]:
    """Image features of each slice's spots (one image and coordinate array per slice) and the run's record.

    One BYOL backbone is trained on the patches of all slices together; z-scoring and PCA are per slice.
    """
    from .resnet import build_backbone

    timer = Timer()
    torch.manual_seed(settings.random_state)
    with timer("patches"):
        pieces = [filtered_patches(t, c, settings, device=device, progress=progress)
                  for t, c in zip(tissues, coordinates)]
        patches = torch.cat([p for p, _ in pieces])
    backbone = build_backbone(settings.backbone, settings.weights).to(device)
    model = _byol.BYOL(backbone, backbone.feature_dim).to(device)
    augmentation = _byol.Augmentation(output_px=settings.input_px)
    with timer("byol"):
        losses = _byol.train_byol(model, patches, augmentation, epochs=settings.byol_epochs,
                                  batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                                  seed=settings.random_state, device=device, progress=progress)
    with timer("embed"):
        embedded = _byol.embed(backbone, patches, device=device, progress=progress).numpy()
    with timer("pca"):
        bounds = np.cumsum([0] + [len(c) for c in coordinates])
        reduced = [reduce_features(embedded[a:b], settings.n_components, settings.random_state)
                   for a, b in zip(bounds, bounds[1:])]
    record = {
        "settings": settings.as_record(),
        "image_sources": [t.source for t in tissues],
        "image_scales": [t.scale for t in tissues],
        "patch_sides_px": [side for _, side in pieces],
        "n_patches": int(len(patches)),
        "backbone_dim": int(backbone.feature_dim),
        "byol_losses": np.asarray(losses, dtype=np.float32),
        "explained_variance": [variance for _, variance in reduced],
        "device": str(device),
        "timings": timer.seconds,
    }
    return [r for r, _ in reduced], record
