"""Plots. Figures are returned for further editing; ``save=`` writes them atomically."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from . import io as _io
from ._utils import atomic_path
from .errors import InputError


def domains(
    adata: ad.AnnData,
    key: str = "domain",
    *,
    library_id: str | None = None,
    image: bool = True,
    spot_size: float | None = None,
    title: str | None = None,
    ax=None,
    save: str | Path | None = None,
):
    """Draw ``obs[key]`` on the tissue: over the H&E image when one is stored, on the coordinates otherwise."""
    import matplotlib.pyplot as plt

    if key not in adata.obs:
        raise InputError(f"obs['{key}'] does not exist: run sd.tl.cluster (or sd.find_domains) first")
    coordinates = _io.spatial_coordinates(adata)
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 7))
    scale = 1.0
    background = _tissue_image(adata, library_id) if image else None
    if background is not None:
        picture, scale = background
        ax.imshow(picture)
    points = coordinates * scale
    values = adata.obs[key]
    categories = list(values.cat.categories) if hasattr(values, "cat") else sorted(values.dropna().unique())
    colours = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
    size = spot_size or max(2.0, 25000.0 / max(len(points), 1))
    missing = values.isna().to_numpy()
    if missing.any():
        ax.scatter(points[missing, 0], points[missing, 1], s=size, c="lightgrey", label="none", linewidths=0)
    for i, category in enumerate(categories):
        member = (values == category).to_numpy()
        ax.scatter(points[member, 0], points[member, 1], s=size, color=colours(i % colours.N), label=str(category),
                   linewidths=0)
    if background is None:
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title or key)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=2, title=key)
    if save is not None:
        with atomic_path(save) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(save).suffix.lstrip(".") or "png")
    return figure


def embedding(
    adata: ad.AnnData,
    basis: str = "X_umap",
    color: str | list[str] = "domain",
    *,
    save: str | Path | None = None,
):
    """Scatter the 2-d ``obsm[basis]`` (e.g. a UMAP), one panel per ``obs`` column in ``color``."""
    import matplotlib.pyplot as plt

    if basis not in adata.obsm:
        raise InputError(f"obsm['{basis}'] does not exist: compute it first (e.g. sd.tl.umap(adata))")
    keys = [color] if isinstance(color, str) else list(color)
    for key in keys:
        if key not in adata.obs:
            raise InputError(f"obs['{key}'] does not exist (obs columns: {', '.join(adata.obs)})")
    points = np.asarray(adata.obsm[basis])[:, :2]
    figure, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 5), squeeze=False)
    size = max(1.0, 12000.0 / max(len(points), 1))
    for ax, key in zip(axes[0], keys):
        values = adata.obs[key].astype("category")
        colours = plt.get_cmap("tab20" if len(values.cat.categories) > 10 else "tab10")
        for i, category in enumerate(values.cat.categories):
            member = (values == category).to_numpy()
            ax.scatter(points[member, 0], points[member, 1], s=size, color=colours(i % colours.N),
                       label=str(category), linewidths=0)
        ax.set_title(key)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=3)
    figure.tight_layout()
    if save is not None:
        with atomic_path(save) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(save).suffix.lstrip(".") or "png")
    return figure


def attention(
    data,
    key: str = "spami_attention",
    *,
    spot_size: float | None = None,
    save: str | Path | None = None,
):
    """SpaMI's per-spot modality weights on the tissue: one panel per modality, its weight from 0 to 1 (which
    omics drives each spot). ``data`` is the MuData or AnnData returned by ``sd.tl.spami``."""
    import matplotlib.pyplot as plt

    if key not in data.obsm:
        raise InputError(f"obsm['{key}'] does not exist: run sd.tl.spami first")
    record = data.uns.get("spatialdomains", {}).get("spami", {})
    weights = np.asarray(data.obsm[key], dtype=float)
    names = [str(m) for m in record.get("modalities", [f"modality {j + 1}" for j in range(weights.shape[1])])]
    coordinates = _io.spatial_coordinates(data)
    size = spot_size or max(2.0, 25000.0 / max(len(coordinates), 1))
    figure, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 5), squeeze=False)
    for ax, name, column in zip(axes[0], names, weights.T):
        shown = np.isfinite(column)
        points = ax.scatter(coordinates[shown, 0], coordinates[shown, 1], c=column[shown], s=size, vmin=0, vmax=1,
                            cmap="viridis", linewidths=0)
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(f"attention weight: {name} (mean {np.nanmean(column):.2f})")
        figure.colorbar(points, ax=ax, shrink=0.7)
    if save is not None:
        with atomic_path(save) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(save).suffix.lstrip(".") or "png")
    return figure


def _tissue_image(adata: ad.AnnData, library_id: str | None):
    """(image, scale factor from full resolution) of the best stored image, or None."""
    libraries = adata.uns.get("spatial", {})
    if not libraries:
        return None
    library_id = library_id or next(iter(libraries))
    entry = libraries.get(library_id, {})
    images, factors = entry.get("images", {}), entry.get("scalefactors", {})
    for resolution in ("hires", "lowres"):
        factor = factors.get(f"tissue_{resolution}_scalef")
        if resolution in images and factor:
            return np.asarray(images[resolution]), float(factor)
    return None
