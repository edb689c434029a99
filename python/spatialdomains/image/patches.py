"""Square patches of a tissue image centred on spots, cropped in batches by index arithmetic (no per-spot loops)."""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from ..errors import InputError
from ..graph import median_nn_distance

logger = logging.getLogger("spatialdomains")

#: Fiducial diameter over the nearest-neighbour spot distance on Visium (144.6 / 137.0, DLPFC 151673).
FIDUCIAL_PER_SPOT_DISTANCE = 1.055
#: Below this side a patch has no cellular texture left (a Visium low-res image gives about 23 px).
MIN_TEXTURED_SIDE = 64


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An image as H × W × 3 uint8: floats in [0, 1] are scaled by 255, grey is repeated, alpha dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"image must be H × W, H × W × 3 or H × W × 4, got shape {image.shape}")
    image = image[..., :3]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float32)
    if np.nanmax(values) <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def patch_side(scale: float, fiducial_diameter: float | None, coordinates: np.ndarray,
               patch_factor: float = 3.5) -> int:
    """Side in image pixels: round(patch_factor · d · scale), d the fiducial diameter in coordinate units.

    Without a fiducial diameter, d = 1.055 × the median nearest-neighbour spot distance (the Visium ratio).
    """
    if fiducial_diameter is None or not np.isfinite(fiducial_diameter) or fiducial_diameter <= 0:
        fiducial_diameter = FIDUCIAL_PER_SPOT_DISTANCE * median_nn_distance(coordinates)
        logger.info("image patches: no fiducial diameter in the scale factors; using %.1f (1.055 × the median "
                    "spot distance)", fiducial_diameter)
    side = int(round(patch_factor * fiducial_diameter * scale))
    if side < 2:
        raise InputError(f"patches would be {side} px wide (patch_factor {patch_factor} × diameter "
                         f"{fiducial_diameter:.3g} × image scale {scale:.3g}); check the image scale factor")
    if side < MIN_TEXTURED_SIDE:
        warnings.warn(f"image patches are only {side} px wide: at this resolution the image carries no cellular "
                      "texture, so image features are a smoke test at best; use a higher-resolution image",
                      UserWarning, stacklevel=3)
    return side


def patch_origins(centres: np.ndarray, side: int) -> np.ndarray:
    """Top-left (row, column) of each patch; ``centres`` are (x, y) = (column, row) image pixels."""
    centres = np.asarray(centres, dtype=np.float64)
    return np.stack([np.rint(centres[:, 1]).astype(np.int64) - side // 2,
                     np.rint(centres[:, 0]).astype(np.int64) - side // 2], axis=1)


def crop_patches(image: np.ndarray, centres: np.ndarray, side: int, *, batch_size: int = 64
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield batches of (patches, inside): patches n × 3 × side × side (float32, 0–255) centred on the spots,
    white (255) where they leave the image; ``inside`` n × 4 = the rows [r0, r1) and columns [c0, c1) of each
    patch that lie on the image (what ``border='truncate'`` keeps)."""
    image = as_rgb_uint8(image)
    height, width = image.shape[:2]
    origins = patch_origins(centres, side)
    if np.any((origins + side <= 0) | (origins >= (height, width))):
        raise InputError("some spots lie outside the image: check the image scale factor (image_scale) and that "
                         "obsm['spatial'] holds full-resolution (x, y) pixel coordinates")
    padded = np.pad(image, ((side, side), (side, side), (0, 0)), constant_values=255)
    offsets = np.arange(side)
    for first in range(0, len(origins), batch_size):
        top_left = origins[first:first + batch_size]
        rows = (top_left[:, 0, None] + side + offsets)[:, :, None]
        cols = (top_left[:, 1, None] + side + offsets)[:, None, :]
        patches = torch.from_numpy(padded[rows, cols]).permute(0, 3, 1, 2).float()
        start = np.maximum(-top_left, 0)
        stop = np.minimum((height, width) - top_left, side)
        inside = torch.from_numpy(np.stack([start[:, 0], stop[:, 0], start[:, 1], stop[:, 1]], axis=1))
        yield patches, inside
