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

from .._utils import Progress, Timer
from ..errors import InputError
from .._tissue_image import read_image
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
    if settings.border not in BORDER_MODES:
        raise InputError(f"border must be one of {BORDER_MODES}, got '{settings.border}'")
    side = patch_side(tissue.scale, tissue.fiducial_diameter, coordinates, settings.patch_factor)
    centres = np.asarray(coordinates, dtype=np.float64) * tissue.scale
    out = torch.empty((len(centres), settings.input_px, settings.input_px), dtype=torch.uint8)
    first = 0
    with Progress("image patches", len(centres), unit="spots", enabled=progress) as bar:
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


# ---------------------------------------------------------------------------------------------------------------
# The tool (sd.tl.image_features): one AnnData, several slices, or one AnnData holding several slices
# ---------------------------------------------------------------------------------------------------------------

def image_features(
    data,
    *,
    image=None,
    image_scale: float | None = None,
    library_id: str | None = None,
    batch_key: str | None = None,
    features=None,
    backbone: str = "auto",
    weights: str | None = None,
    input_px: int | None = None,
    byol_epochs: int = 1,
    batch_size: int = 43,
    patch_factor: float = 3.5,
    border: str = "pad",
    patch_px: int = 512,
    blur1: int = 5,
    blur2: int = 15,
    band: tuple[int, int] | None = None,
    n_components: int = 64,
    random_state: int = 42,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    key_added: str = "X_image",
):
    """H&E image features of each spot, as STAIG uses them, into ``obsm[key_added]`` (spots × ``n_components``).

    A square patch of ``patch_factor`` fiducial diameters around each spot is cut from the best image available
    (``image`` if given, else full-res, hires or lowres from ``uns['spatial']``, with its scale factor), resized
    to ``patch_px``, filtered as published (grey, ``blur1`` Gaussian, box ``band`` of the centred spectrum,
    modulus of the inverse, ``blur2`` Gaussian), resized to ``input_px`` and embedded by a ResNet trained with
    BYOL for ``byol_epochs``; the embedding is z-scored and reduced by PCA.

    Several slices (a list or dict of AnnData, or one AnnData whose ``obs[batch_key]`` names the slices and
    whose ``uns['spatial']`` holds one library per slice, named as the slices): each slice uses its own image
    and its own z-score and PCA; one backbone is trained on the patches of all slices.

    Parameters
    ----------
    image, image_scale
        A tissue image (array or file) and its pixels per unit of ``obsm['spatial']`` (1 = full resolution);
        one section only.
    library_id
        Which ``uns['spatial']`` entry to use when there are several.
    features
        Your own per-spot image features (array, or an ``obsm`` key): only the z-score and PCA are applied.
    backbone, weights
        ``'resnet18'``, ``'resnet34'``, ``'resnet50'`` (published) or ``'auto'`` (ResNet-50 on a GPU, ResNet-18
        on CPU); ``weights`` a torchvision-layout ImageNet state dict file. Without it the backbone starts
        from random weights (with a warning).
    input_px
        Side of the backbone's input: 256 (published; the default on a GPU) or 128 on CPU, which loses nothing
        of the filtered patch (its spectrum stops at about 19 cycles per side) and is four times faster.
    patch_factor, border
        Patch side in fiducial diameters (3.5); ``'pad'`` fills parts outside the image with white,
        ``'truncate'`` (published) cuts the patch at the edge.
    n_components, random_state
        PCA components (64) and the seed of BYOL, its augmentations and the PCA.
    overwrite
        Recompute even when ``obsm[key_added]`` already holds features made with the same settings.

    Returns
    -------
    The input, with the features in ``obsm[key_added]`` of each slice and the run's settings, BYOL losses and
    timings in ``uns['spatialdomains']['image_features']``.
    """
    from .._utils import package_versions
    from ..models.trainer import select_device

    slices = _slice_pieces(data, batch_key, image, library_id)
    if features is not None:
        for piece in slices:
            _own_features(piece.adata, features, n_components, random_state, key_added)
        return data
    chosen_device = select_device(device)
    on_gpu = chosen_device.type == "cuda"
    backbone = ("resnet50" if on_gpu else "resnet18") if backbone == "auto" else backbone
    settings = ImageFeatureSettings(
        backbone=backbone, weights=None if weights is None else str(weights),
        input_px=input_px or (256 if on_gpu else 128), byol_epochs=byol_epochs, batch_size=batch_size,
        patch_factor=patch_factor, border=border,
        filter=FilterSettings(patch_px=patch_px, blur1=blur1, blur2=blur2, band=None if band is None else tuple(band)),
        n_components=n_components, random_state=random_state)
    tissues = []
    for piece in slices:
        tissue = find_image(piece.adata, image, image_scale, piece.library_id)
        if tissue is None:
            where = f"slice {piece.name}: " if len(slices) > 1 else ""
            raise InputError(f"{where}no tissue image: uns['spatial'][library]['images'] is empty and no image= "
                             "was given; pass image= (array or file) and image_scale= (pixels per obsm['spatial'] "
                             "unit)")
        tissues.append(tissue)
    wanted = {"settings": settings.as_record(), "image_sources": [t.source for t in tissues]}
    if not overwrite and all(_holds_features(piece.adata, key_added, wanted) for piece in slices):
        logger.info("image features: obsm['%s'] already holds features made with these settings; reusing them "
                    "(overwrite=True recomputes)", key_added)
        return data
    logger.info("image features: %s, %d-px input, %s image(s), on %s", backbone, settings.input_px,
                ", ".join(wanted["image_sources"]), chosen_device)
    coordinates = [piece.coordinates for piece in slices]
    reduced, record = extract_features(tissues, coordinates, settings, device=chosen_device, progress=progress)
    for piece, values in zip(slices, reduced):
        piece.write(key_added, values, {**record, "key_added": key_added, "versions": package_versions()})
    return data


@dataclass
class _SlicePiece:
    """One slice's spots inside the object the user gave (all of it, or the rows of one slice)."""

    adata: object
    name: str
    library_id: str | None
    rows: np.ndarray | None = None
    owner: object = None

    @property
    def coordinates(self) -> np.ndarray:
        from ..io import spatial_coordinates

        return spatial_coordinates(self.owner if self.rows is not None else self.adata)[self._rows_or_all]

    @property
    def _rows_or_all(self):
        return slice(None) if self.rows is None else self.rows

    def write(self, key: str, values: np.ndarray, record: dict) -> None:
        from .._record import record_step

        target = self.owner if self.rows is not None else self.adata
        if self.rows is None:
            target.obsm[key] = values
            record_step(target, "image_features", record)
            return
        if key not in target.obsm or np.shape(target.obsm[key]) != (target.n_obs, values.shape[1]):
            target.obsm[key] = np.full((target.n_obs, values.shape[1]), np.nan, dtype=np.float32)
        target.obsm[key][self.rows] = values
        stored = dict(target.uns.get("spatialdomains", {}).get("image_features", {}).get("per_slice", {}))
        record_step(target, "image_features", {"per_slice": {**stored, self.name: record}})


def _slice_pieces(data, batch_key, image, library_id) -> list[_SlicePiece]:
    """The slices of ``data`` (an AnnData, a list or dict of them, or an AnnData with ``batch_key``)."""
    if isinstance(data, dict):
        named = [(str(name), adata) for name, adata in data.items()]
    elif isinstance(data, (list, tuple)):
        named = [(f"slice{i + 1}", adata) for i, adata in enumerate(data)]
    elif batch_key is None:
        return [_SlicePiece(data, "", library_id)]
    else:
        return _slices_by_key(data, batch_key, image)
    if image is not None and len(named) > 1:
        raise InputError("image= gives one image for one section; for several slices keep each slice's image in "
                         "its uns['spatial'] (e.g. read each Space Ranger folder) and leave image= out")
    return [_SlicePiece(adata, name, library_id) for name, adata in named]


def _slices_by_key(adata, batch_key: str, image) -> list[_SlicePiece]:
    """Slices of one AnnData, each with the ``uns['spatial']`` library named after it."""
    import anndata as ad

    from ..slices import batch_labels

    labels = batch_labels(adata, batch_key).astype(str).to_numpy()
    names = list(dict.fromkeys(labels))
    if len(names) == 1:
        return [_SlicePiece(adata, names[0], None)]
    libraries = adata.uns.get("spatial", {})
    missing = [name for name in names if name not in libraries]
    if image is not None or missing:
        raise InputError(f"image features of several slices in one AnnData need one uns['spatial'] library per "
                         f"slice, named as in obs['{batch_key}'] (missing: {', '.join(missing) or 'none'}); "
                         "or pass the slices as a list, each with its own image")
    pieces = []
    for name in names:
        rows = np.flatnonzero(labels == name)
        light = ad.AnnData(obs=adata.obs.iloc[rows, :0].copy())
        light.uns["spatial"] = {name: libraries[name]}
        pieces.append(_SlicePiece(light, name, name, rows=rows, owner=adata))
    return pieces


def _own_features(adata, features, n_components: int, random_state: int, key_added: str) -> None:
    """The user's own per-spot features, z-scored and reduced (no image needed)."""
    from .._utils import package_versions
    from .._record import record_step

    if isinstance(features, str) and features not in adata.obsm:
        raise InputError(f"features: obsm['{features}'] does not exist (obsm keys: {', '.join(adata.obsm)})")
    given = adata.obsm[features] if isinstance(features, str) else features
    if len(given) != adata.n_obs:
        raise InputError(f"features have {len(given)} rows for {adata.n_obs} spots")
    reduced, variance = reduce_features(np.asarray(given), n_components, random_state)
    adata.obsm[key_added] = reduced
    record_step(adata, "image_features", {"source": features if isinstance(features, str) else "array given",
                                          "n_components": reduced.shape[1], "explained_variance": variance,
                                          "versions": package_versions()})


def _holds_features(adata, key: str, wanted: dict) -> bool:
    """Whether ``obsm[key]`` already holds features made with the wanted settings (record read back or not)."""
    from .._utils import h5ad_safe, json_safe

    previous = adata.uns.get("spatialdomains", {}).get("image_features", {})
    return key in adata.obsm and all(json_safe(previous.get(k)) == json_safe(h5ad_safe(v)) for k, v in wanted.items())
