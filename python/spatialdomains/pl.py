"""Plots. Figures are returned for further editing; ``save=`` writes them atomically."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

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
    """Draw ``obs[key]`` on the tissue.

    Over the H&E image when one is stored, on the coordinates otherwise.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the labels and the coordinates.
    key : str, optional
        The ``obs`` column to draw.
    library_id : str or None, optional
        The ``uns['spatial']`` entry whose image is drawn; by default the first.
    image : bool, optional
        Draw over the stored H&E image, when there is one.
    spot_size : float or None, optional
        Marker size; by default one that suits the number of spots.
    title : str or None, optional
        The title; by default ``key``.
    ax : matplotlib.axes.Axes or None, optional
        The axis to draw on; by default a new figure.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    if key not in adata.obs:
        raise InputError(f"obs['{key}'] does not exist: run sd.tl.cluster (or sd.find_domains) first")
    figure, ax, points, background = _tissue_axes(adata, library_id, image, ax)
    values = adata.obs[key]
    categories = list(values.cat.categories) if hasattr(values, "cat") else sorted(values.dropna().unique())
    colours = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
    size = spot_size or max(2.0, 25000.0 / max(len(points), 1))
    missing = values.isna().to_numpy()
    if missing.any():
        ax.scatter(points[missing, 0], points[missing, 1], s=size, c="lightgrey", label="none", linewidths=0,
                   rasterized=True)
    for i, category in enumerate(categories):
        member = (values == category).to_numpy()
        ax.scatter(points[member, 0], points[member, 1], s=size, color=colours(i % colours.N), label=str(category),
                   linewidths=0, rasterized=True)  # a million points stay light in a PDF or SVG
    _frame_tissue(ax, points, background, title or key)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=2, title=key)
    return _finish(figure, save)


def pseudotime(adata: ad.AnnData, key: str = "pseudotime", *, library_id: str | None = None, image: bool = True,
               spot_size: float | None = None, title: str | None = None, ax=None, save: str | Path | None = None):
    """Draw ``obs[key]`` (from :func:`spatialdomains.tl.pseudotime`) on the tissue, the root marked with a star.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the pseudotime and the coordinates.
    key : str, optional
        The ``obs`` column of the pseudotime.
    library_id : str or None, optional
        The ``uns['spatial']`` entry whose image is drawn; by default the first.
    image : bool, optional
        Draw over the stored H&E image, when there is one.
    spot_size : float or None, optional
        Marker size; by default one that suits the number of spots.
    title : str or None, optional
        The title; by default ``key``.
    ax : matplotlib.axes.Axes or None, optional
        The axis to draw on; by default a new figure.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    if key not in adata.obs:
        raise InputError(f"obs['{key}'] does not exist: run sd.tl.pseudotime(adata) first")
    figure, ax, points, background = _tissue_axes(adata, library_id, image, ax)
    values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=np.float64)
    known = np.isfinite(values)
    size = spot_size or max(2.0, 25000.0 / max(len(points), 1))
    if (~known).any():
        ax.scatter(points[~known, 0], points[~known, 1], s=size, c="lightgrey", linewidths=0, rasterized=True)
    drawn = ax.scatter(points[known, 0], points[known, 1], s=size, c=values[known], cmap="viridis", linewidths=0,
                       rasterized=True)
    record = adata.uns.get("spatialdomains", {}).get("pseudotime", {})
    root = record.get("root_spot") if record.get("key_added", key) == key else None
    if root is not None and root in adata.obs_names:
        where = adata.obs_names.get_loc(root)
        ax.scatter(*points[where], marker="*", s=300, c="red", edgecolors="white", linewidths=1.2, label="root")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.0), frameon=False)  # below the map, clear of the bar
    _frame_tissue(ax, points, background, title or key)
    figure.colorbar(drawn, ax=ax, shrink=0.6, label=f"{key} (0 at the root)")
    return _finish(figure, save)


def pseudotime_by_domain(adata: ad.AnnData, key: str = "pseudotime", groupby: str = "domain", *, ax=None,
                         save: str | Path | None = None):
    """Box plots of ``obs[key]`` per ``obs[groupby]`` category, ordered by median.

    The order shows the domains along the trajectory.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the pseudotime and the groups.
    key : str, optional
        The ``obs`` column of the pseudotime.
    groupby : str, optional
        The ``obs`` column of the groups.
    ax : matplotlib.axes.Axes or None, optional
        The axis to draw on; by default a new figure.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    if key not in adata.obs:
        raise InputError(f"obs['{key}'] does not exist: run sd.tl.pseudotime(adata) first")
    groups = _categorical(adata, groupby)
    values = pd.to_numeric(adata.obs[key], errors="coerce")
    categories = list(groups.cat.categories)
    colour_of = dict(zip(categories, domain_colours(len(categories))))
    data = {c: values[(groups == c).to_numpy()].dropna().to_numpy() for c in categories}
    ordered = sorted((c for c in categories if len(data[c])), key=lambda c: np.median(data[c]))
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(max(4.5, 0.55 * len(ordered) + 2), 3.6))
    boxes = ax.boxplot([data[c] for c in ordered], patch_artist=True, showfliers=False, widths=0.6)
    for patch, category in zip(boxes["boxes"], ordered):
        patch.set_facecolor(colour_of[category])
    ax.set_xticks(range(1, len(ordered) + 1), [str(c) for c in ordered])
    ax.set_xlabel(f"{groupby} (ordered by median {key})")
    ax.set_ylabel(key)
    ax.spines[["top", "right"]].set_visible(False)
    return _finish(figure, save)


def matches(reference: ad.AnnData, query: ad.AnnData, key: str = "domain_transferred", *, label_key: str | None = None,
            n_lines: int = 150, random_state: int = 0, save: str | Path | None = None):
    """The reference and the query side by side, with lines joining some matched pairs.

    The reference (left) is coloured by ``label_key`` and the query (right) by its transferred
    ``obs[key]``, from :func:`spatialdomains.tl.transfer_labels`.

    Parameters
    ----------
    reference : anndata.AnnData
        The labelled slice.
    query : anndata.AnnData
        The slice that received the labels.
    key : str, optional
        The query's ``obs`` column of transferred labels (the ``key_added`` of the transfer).
    label_key : str or None, optional
        The reference's ``obs`` column of labels; by default the one the transfer used.
    n_lines : int, optional
        How many matched pairs, drawn at random, are joined by a line.
    random_state : int, optional
        Seed of that draw.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    partner_key = f"{key}_reference_spot"
    if partner_key not in query.obs:
        raise InputError(f"query.obs['{partner_key}'] does not exist: run sd.tl.transfer_labels(reference, query) "
                         "first (and give its key_added as key)")
    label_key = label_key or query.uns.get("spatialdomains", {}).get("transfer_labels", {}).get("label_key", "domain")
    if label_key not in reference.obs:
        raise InputError(f"reference.obs['{label_key}'] does not exist: name the reference labels with label_key")
    left, right = _unit_frame(_io.spatial_coordinates(reference)), _unit_frame(_io.spatial_coordinates(query))
    right = right + np.array([1.25, 0.0])
    categories = list(pd.Categorical(reference.obs[label_key].dropna().astype(str)).categories)
    colour_of = dict(zip(categories, domain_colours(len(categories))))
    figure, ax = plt.subplots(figsize=(12, 6))
    size = max(1.0, 15000.0 / max(reference.n_obs + query.n_obs, 1))
    for points, labels in ((left, reference.obs[label_key]), (right, query.obs[key])):
        colours = [colour_of.get(str(v), "lightgrey") if pd.notna(v) else "lightgrey" for v in labels]
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colours, linewidths=0, rasterized=True)
    partners = query.obs[partner_key]
    matched = np.flatnonzero(partners.notna().to_numpy())
    shown = np.random.default_rng(random_state).choice(matched, min(n_lines, len(matched)), replace=False)
    starts = left[reference.obs_names.get_indexer(partners.iloc[shown].astype(str))]
    for start, end in zip(starts, right[shown]):
        ax.plot([start[0], end[0]], [start[1], end[1]], color="black", alpha=0.25, linewidth=0.6)
    for name, colour in colour_of.items():
        ax.scatter([], [], s=40, color=colour, label=name)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=label_key)
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"reference (left, {label_key}) and query (right, transferred); {len(shown)} of {len(matched):,} "
                 "matches drawn")
    return _finish(figure, save)


def _unit_frame(coordinates: np.ndarray) -> np.ndarray:
    """Coordinates moved and scaled (one factor for both axes) into the unit square, to draw slices side by side."""
    low = coordinates.min(axis=0)
    return (coordinates - low) / max(float(np.ptp(coordinates, axis=0).max()), 1e-12)


def _tissue_axes(adata: ad.AnnData, library_id: str | None, image: bool, ax):
    """A figure and axis for a map of the spots, with the H&E under them when asked and stored: (figure, axis,
    spot positions in the drawn frame, the background or None)."""
    import matplotlib.pyplot as plt

    coordinates = _io.spatial_coordinates(adata)
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 7))
    background = _tissue_image(adata, library_id) if image else None
    if background is None:
        return figure, ax, coordinates, None
    picture, scale = background
    ax.imshow(picture)
    return figure, ax, coordinates * scale, background


def _frame_tissue(ax, points: np.ndarray, background, title: str) -> None:
    if background is None:
        ax.invert_yaxis()
    else:
        _crop_to(ax, points)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title)


def tissue(adata: ad.AnnData, *, library_id: str | None = None, title: str = "tissue image", ax=None,
           save: str | Path | None = None):
    """The stored tissue image alone, cropped to the spots (as :func:`domains` draws it).

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the image and the coordinates.
    library_id : str or None, optional
        The ``uns['spatial']`` entry whose image is drawn; by default the first.
    title : str, optional
        The title.
    ax : matplotlib.axes.Axes or None, optional
        The axis to draw on; by default a new figure.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure, for further editing; None when no image is stored.
    """
    import matplotlib.pyplot as plt

    background = _tissue_image(adata, library_id)
    if background is None:
        return None
    picture, scale = background
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 7))
    ax.imshow(picture)
    _crop_to(ax, _io.spatial_coordinates(adata) * scale)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title)
    return _finish(figure, save)


def _crop_to(ax, points: np.ndarray, margin: float = 0.04) -> None:
    """Limit an image axis to the spots' extent (and a margin), so the tissue fills the panel, not the slide."""
    low, high = np.nanmin(points, axis=0), np.nanmax(points, axis=0)
    pad = margin * float(max(high - low)) + 1.0
    ax.set_xlim(low[0] - pad, high[0] + pad)
    ax.set_ylim(high[1] + pad, low[1] - pad)


def embedding(
    adata: ad.AnnData,
    basis: str = "X_umap",
    color: str | list[str] = "domain",
    *,
    save: str | Path | None = None,
):
    """Scatter the 2-d ``obsm[basis]`` (e.g. a UMAP), one panel per ``obs`` column in ``color``.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the embedding and the labels.
    basis : str, optional
        The ``obsm`` key of the 2-d embedding.
    color : str or list of str, optional
        The ``obs`` column (or columns) that colour the points.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    if basis not in adata.obsm:
        raise InputError(f"obsm['{basis}'] does not exist: compute it first (e.g. sd.tl.umap(adata))")
    keys = [color] if isinstance(color, str) else list(color)
    for key in keys:
        if key not in adata.obs:
            raise InputError(f"obs['{key}'] does not exist (obs columns: {', '.join(adata.obs)})")
    points = np.asarray(adata.obsm[basis])[:, :2]
    placed = np.all(np.isfinite(points), axis=1)  # a UMAP of a sample places only the sampled spots
    figure, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 5), squeeze=False)
    size = max(1.0, 12000.0 / max(int(placed.sum()), 1))
    for ax, key in zip(axes[0], keys):
        values = adata.obs[key].astype("category")
        colours = plt.get_cmap("tab20" if len(values.cat.categories) > 10 else "tab10")
        for i, category in enumerate(values.cat.categories):
            member = (values == category).to_numpy() & placed
            ax.scatter(points[member, 0], points[member, 1], s=size, color=colours(i % colours.N),
                       label=str(category), linewidths=0, rasterized=True)
        ax.set_title(key if placed.all() else f"{key} ({int(placed.sum()):,} of {len(placed):,} spots, at random)")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=3)
    figure.tight_layout()
    return _finish(figure, save)


def attention(
    data,
    key: str = "spami_attention",
    *,
    spot_size: float | None = None,
    save: str | Path | None = None,
):
    """SpaMI's per-spot modality weights on the tissue: which omics drives each spot.

    One panel per modality, its weight from 0 to 1.

    Parameters
    ----------
    data : mudata.MuData or anndata.AnnData
        The object returned by ``sd.tl.spami``.
    key : str, optional
        The ``obsm`` key of the weights.
    spot_size : float or None, optional
        Marker size; by default one that suits the number of spots.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    if key not in data.obsm:
        raise InputError(f"obsm['{key}'] does not exist: run sd.tl.spami first")
    record = data.uns.get("spatialdomains", {}).get(key.removesuffix("_attention"), {})  # the method that wrote it
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
    return _finish(figure, save)


def denoised(imputed: ad.AnnData, genes=None, *, n_genes: int = 4, spot_size: float | None = None,
             save: str | Path | None = None):
    """Observed (left) and denoised (right) values of a few genes on the tissue.

    Each gene's two panels share one colour scale, from 0 to the 99th percentile of either.

    Parameters
    ----------
    imputed : anndata.AnnData
        The AnnData returned by :func:`spatialdomains.tl.impute`.
    genes : str or list of str or None, optional
        The genes, by name; by default the first ``n_genes``.
    n_genes : int, optional
        How many genes to draw when ``genes`` is None.
    spot_size : float or None, optional
        Marker size; by default one that suits the number of spots.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    if "observed" not in imputed.layers:
        raise InputError("expected the AnnData returned by sd.tl.impute (it has layers['observed'])")
    names = list(imputed.var_names[:n_genes]) if genes is None else [str(g) for g in np.atleast_1d(genes)]
    missing = [g for g in names if g not in imputed.var_names]
    if missing or not names:
        raise InputError(f"genes: {', '.join(missing[:5]) or 'none given'} not in the imputed AnnData's var_names")
    if "spatial" not in imputed.obsm:
        raise InputError("obsm['spatial'] does not exist: the imputed AnnData needs the spots' coordinates")
    coordinates = np.asarray(imputed.obsm["spatial"], dtype=np.float64)[:, :2]
    placed = np.isfinite(coordinates).all(axis=1)  # paired omics: spots of one modality only have none
    size = spot_size or max(2.0, 25000.0 / max(int(placed.sum()), 1))
    figure, axes = plt.subplots(len(names), 2, figsize=(10, 4.3 * len(names)), squeeze=False)
    symbols = imputed.var["symbol"] if "symbol" in imputed.var else pd.Series(imputed.var_names, imputed.var_names)
    for row, gene in zip(axes, names):
        column = imputed.var_names.get_loc(gene)
        panels = [_dense_column(imputed.layers["observed"], column), _dense_column(imputed.X, column)]
        finite = np.concatenate([p[np.isfinite(p)] for p in panels])
        top = float(np.percentile(finite, 99)) if len(finite) else 1.0
        for ax, values, what in zip(row, panels, ("observed", "denoised")):
            shown = np.isfinite(values) & placed
            drawn = ax.scatter(coordinates[shown, 0], coordinates[shown, 1], c=values[shown], s=size, vmin=0,
                               vmax=max(top, 1e-6), cmap="magma", linewidths=0, rasterized=True)
            ax.invert_yaxis()
            ax.set_aspect("equal")
            ax.set_axis_off()
            ax.set_title(f"{symbols.iloc[column]}: {what}")
        figure.colorbar(drawn, ax=list(row), shrink=0.8, label="log-normalised" if
                        "log" in str(imputed.uns.get("spatialdomains", {}).get("impute", {}).get("scale", "log"))
                        else "CLR")
    return _finish(figure, save)


def _dense_column(matrix, column: int) -> np.ndarray:
    values = matrix[:, column]
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=np.float64).ravel()


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


def n_domains_scores(adata: ad.AnnData, *, ax=None, save: str | Path | None = None):
    """The score of each candidate number of domains, the chosen number marked.

    The scores (silhouette or stability) come from the last :func:`spatialdomains.tl.cluster` that chose the
    number itself.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the clustering's record.
    ax : matplotlib.axes.Axes or None, optional
        The axis to draw on; by default a new figure.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    record = adata.uns.get("spatialdomains", {}).get("cluster", {})
    details = record.get("details", {})
    name = next((n for n in ("stability", "silhouette") if f"{n}_by_n_domains" in details), None)
    if name is None:
        raise InputError("no scores of candidate numbers of domains: run sd.tl.cluster(adata) without n_domains "
                         "(choose_by='silhouette' or 'stability') first")
    scores = {int(k): float(v) for k, v in details[f"{name}_by_n_domains"].items()}
    numbers = sorted(scores)
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.5))
    ax.plot(numbers, [scores[k] for k in numbers], marker="o", color="#4C72B0")
    chosen = int(record.get("n_domains"))
    ax.axvline(chosen, color="#C44E52", linestyle="--", linewidth=1)
    ax.annotate(f"chosen: {chosen}", (chosen, scores.get(chosen, np.nan)), textcoords="offset points",
                xytext=(6, 6), color="#C44E52")
    ax.set_xticks(numbers)
    ax.set_xlabel("number of domains")
    ax.set_ylabel("stability (mean ARI between subsamples)" if name == "stability" else "silhouette")
    ax.spines[["top", "right"]].set_visible(False)
    return _finish(figure, save)


def domain_sizes(adata: ad.AnnData, key: str = "domain", *, save: str | Path | None = None):
    """Bar chart of the number of spots in each domain.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the domains.
    key : str, optional
        The ``obs`` column of the domains.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    values = _categorical(adata, key)
    counts = values.value_counts(sort=False)
    figure, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(counts) + 2), 3.5))
    colours = _palette(len(counts))
    ax.bar([str(c) for c in counts.index], counts.to_numpy(), color=[colours(i % colours.N) for i in range(len(counts))])
    for i, n in enumerate(counts.to_numpy()):
        ax.text(i, n, str(int(n)), ha="center", va="bottom", fontsize=10)
    ax.set_xlabel(key)
    ax.set_ylabel("spots")
    ax.spines[["top", "right"]].set_visible(False)
    return _finish(figure, save)


def qc(adata: ad.AnnData, *, save: str | Path | None = None):
    """Quality control: per-spot histograms, and the same values on the tissue.

    The values are counts, detected genes and, when the gene names show it, the mitochondrial percentage.

    Parameters
    ----------
    adata : anndata.AnnData
        Raw counts and coordinates.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    from .pp import qc_metrics

    metrics = qc_metrics(adata)
    totals = metrics["counts"].to_numpy()
    values = {"counts per spot": (totals, "#4C72B0", np.log10(totals + 1), "log10 counts"),
              "genes detected per spot": (metrics["genes"].to_numpy(), "#55A868", metrics["genes"].to_numpy(),
                                          "genes")}
    if "% mitochondrial" in metrics:
        share = metrics["% mitochondrial"].to_numpy()
        values["% mitochondrial counts"] = (share, "#C44E52", share, "% mitochondrial")
    coordinates = _io.spatial_coordinates(adata)
    figure, axes = plt.subplots(2, len(values), figsize=(5.2 * len(values), 9.5),
                                gridspec_kw={"height_ratios": [1, 1.6]}, squeeze=False)
    size = max(1.0, 12000.0 / max(len(totals), 1))
    for column, (name, (value, colour, shown, label)) in enumerate(values.items()):
        axes[0, column].hist(value, bins=50, color=colour)
        axes[0, column].set_title(f"{name} (median {np.median(value):,.{1 if '%' in name else 0}f})")
        axes[0, column].spines[["top", "right"]].set_visible(False)
        ax = axes[1, column]
        points = ax.scatter(coordinates[:, 0], coordinates[:, 1], c=shown, s=size, cmap="magma", linewidths=0,
                            rasterized=True)
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(f"{label} on the tissue")
        figure.colorbar(points, ax=ax, shrink=0.7)
    figure.tight_layout()
    return _finish(figure, save)


def marker_dotplot(adata: ad.AnnData, table, *, key: str = "domain", n_genes: int = 5, layer: str | None = None,
                   save: str | Path | None = None):
    """Dot plot of each domain's top markers: colour = mean log expression (scaled per gene), size = % expressing.

    Genes are labelled by symbol.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the expression and the domains.
    table : pandas.DataFrame
        A marker table from :func:`spatialdomains.analysis.markers`.
    key : str, optional
        The ``obs`` column of the domains.
    n_genes : int, optional
        How many top markers of each domain.
    layer : str or None, optional
        The layer of expression; None uses ``X``.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    from .analysis.markers import expression_summary, top_markers

    top = top_markers(table, n_genes).drop_duplicates("gene")
    if top.empty:
        top = top_markers(table, n_genes, significant_only=False).drop_duplicates("gene")
    means, fractions = expression_summary(adata, list(top["gene"]), key=key, layer=layer)
    scaled = (means - means.min(axis=0)) / (means.max(axis=0) - means.min(axis=0)).replace(0, 1)
    figure, ax = plt.subplots(figsize=(max(6.0, 0.38 * len(top) + 3), max(3.0, 0.45 * len(means) + 1.5)))
    ys, xs = np.meshgrid(np.arange(len(means)), np.arange(len(top)), indexing="ij")
    points = ax.scatter(xs.ravel(), ys.ravel(), s=20 + 280 * fractions.to_numpy().ravel(), c=scaled.to_numpy().ravel(),
                        cmap="Reds", vmin=0, vmax=1, edgecolors="grey", linewidths=0.3)
    ax.set_xticks(np.arange(len(top)), labels=top["symbol"].astype(str), rotation=90, fontsize=10)
    ax.set_yticks(np.arange(len(means)), labels=[str(d) for d in means.index])
    ax.set_ylabel(key)
    ax.set_xlim(-0.7, len(top) - 0.3)
    ax.set_ylim(len(means) - 0.5, -0.5)
    figure.colorbar(points, ax=ax, shrink=0.6, label="mean expression (scaled)")
    for fraction in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=20 + 280 * fraction, color="grey", label=f"{fraction:.0%}")
    ax.legend(title="expressing", loc="upper left", bbox_to_anchor=(1.15, 1.0), frameon=False, labelspacing=1.2)
    return _finish(figure, save)


def marker_heatmap(adata: ad.AnnData, table, *, key: str = "domain", n_genes: int = 5, layer: str | None = None,
                   save: str | Path | None = None):
    """Heatmap of each domain's top markers' mean log expression, z-scored per gene across domains.

    Parameters
    ----------
    adata : anndata.AnnData
        Holds the expression and the domains.
    table : pandas.DataFrame
        A marker table from :func:`spatialdomains.analysis.markers`.
    key : str, optional
        The ``obs`` column of the domains.
    n_genes : int, optional
        How many top markers of each domain.
    layer : str or None, optional
        The layer of expression; None uses ``X``.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    from .analysis.markers import expression_summary, top_markers

    top = top_markers(table, n_genes).drop_duplicates("gene")
    if top.empty:
        top = top_markers(table, n_genes, significant_only=False).drop_duplicates("gene")
    means, _ = expression_summary(adata, list(top["gene"]), key=key, layer=layer)
    z = (means - means.mean(axis=0)) / means.std(axis=0).replace(0, 1)
    figure, (strip, ax) = plt.subplots(1, 2, figsize=(max(6.5, 0.35 * len(top) + 3.5), max(3.0, 0.4 * len(means) + 1.8)),
                                       gridspec_kw={"width_ratios": [0.35, max(len(top), 1)], "wspace": 0.02})
    from matplotlib.colors import ListedColormap

    colours = domain_colours(len(means))
    strip.imshow(np.arange(len(means))[:, None], aspect="auto", cmap=ListedColormap(colours))
    strip.set_xticks([])
    strip.set_yticks(np.arange(len(means)), labels=[str(d) for d in means.index])
    strip.set_ylabel(key)
    image = ax.imshow(z.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-2, vmax=2)
    ax.set_xticks(np.arange(len(top)), labels=top["symbol"].astype(str), rotation=90, fontsize=10)
    ax.set_yticks([])
    figure.colorbar(image, ax=ax, shrink=0.8, pad=0.02, label="z-score of mean\nexpression")
    return _finish(figure, save)


def volcano(table, *, min_log2fc: float = 0.25, max_pvalue: float = 0.05, pvalue: str = "adjusted",
            n_labels: int = 5, columns: int = 4, save: str | Path | None = None):
    """One volcano plot per domain (log2 fold change × −log10 p), thresholds drawn, top genes named.

    Parameters
    ----------
    table : pandas.DataFrame
        A marker table from :func:`spatialdomains.analysis.markers`.
    min_log2fc : float, optional
        The fold-change threshold drawn.
    max_pvalue : float, optional
        The p-value threshold drawn.
    pvalue : str, optional
        The p on the y axis and behind ``max_pvalue``: ``'adjusted'`` (``padj``) or ``'raw'``
        (``pvalue``), as given to :func:`spatialdomains.analysis.markers`.
    n_labels : int, optional
        How many of the top up-regulated genes are named in each plot.
    columns : int, optional
        Plots per row.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import matplotlib.pyplot as plt

    from .analysis.markers import PVALUES

    if pvalue not in PVALUES:
        raise InputError(f"pvalue must be one of {', '.join(PVALUES)}, not '{pvalue}'")
    column = PVALUES[pvalue]
    domains = list(table["domain"].cat.categories) if hasattr(table["domain"], "cat") else sorted(table["domain"].unique())
    rows = int(np.ceil(len(domains) / columns))
    figure, axes = plt.subplots(rows, min(columns, len(domains)), figsize=(4.2 * min(columns, len(domains)), 3.6 * rows),
                                squeeze=False)
    floor = np.nextafter(0, 1)
    for ax, domain in zip(axes.ravel(), domains):
        part = table[table["domain"] == domain]
        y = -np.log10(np.maximum(part[column].to_numpy(dtype=float), floor))
        x = part["log2fc"].to_numpy(dtype=float)
        limit = _fold_change_limit(x, min_log2fc)
        outside = np.abs(x) > limit  # a few genes barely expressed anywhere: drawn at the edge, as triangles
        x = np.clip(x, -limit, limit)
        up = (part["significant"] & (part["log2fc"] > 0)).to_numpy()
        down = (part["significant"] & (part["log2fc"] < 0)).to_numpy()
        rest = ~(up | down)
        for mask, colour, size, label in ((rest, "lightgrey", 5, None), (up, "#C44E52", 8, f"up {int(up.sum())}"),
                                          (down, "#4C72B0", 8, f"down {int(down.sum())}")):
            ax.scatter(x[mask & ~outside], y[mask & ~outside], s=size, color=colour, linewidths=0, label=label,
                       rasterized=True)
            ax.scatter(x[mask & outside], y[mask & outside], s=size * 2, color=colour, marker="D",
                       linewidths=0, rasterized=True)
        ax.axhline(-np.log10(max_pvalue), color="grey", lw=0.6, ls="--")
        for sign in (-1, 1):
            ax.axvline(sign * min_log2fc, color="grey", lw=0.6, ls="--")
        ax.set_xlim(-1.08 * limit, 1.08 * limit)
        ax.set_ylim(0, 1.12 * max(float(y.max()) if len(y) else 1.0, 1.0))
        best = part[up].nlargest(n_labels, "score")
        _label_points(ax, np.clip(best["log2fc"].to_numpy(dtype=float), -limit, limit),
                      -np.log10(np.maximum(best[column].to_numpy(dtype=float), floor)),
                      best["symbol"].astype(str).tolist())
        ax.set_title(f"domain {domain}")
        ax.set_xlabel("log2 fold change")
        ax.set_ylabel(f"−log10 {pvalue} p")
        ax.legend(loc="upper left", fontsize=9, frameon=False)
    for ax in axes.ravel()[len(domains):]:
        ax.set_visible(False)
    figure.tight_layout()
    return _finish(figure, save)


def _fold_change_limit(x: np.ndarray, min_log2fc: float) -> float:
    """The x range of a volcano: the 99.5th percentile of |log2FC| (at least twice the threshold), so that a few
    genes with near-empty domains do not squeeze the others into a tenth of the width."""
    finite = np.abs(x[np.isfinite(x)])
    if not len(finite):
        return max(1.0, 2 * min_log2fc)
    return float(max(np.quantile(finite, 0.995), 2 * min_log2fc, 0.5))


def _label_points(ax, xs: np.ndarray, ys: np.ndarray, labels: list[str], fontsize: int = 9) -> None:
    """Name points without overlapping labels: each label goes to the nearest free slot beside its point
    (greedy, highest points first), joined to it by a thin line, and stays inside the axes."""
    figure = ax.figure
    figure.canvas.draw()  # the axes' size in pixels
    to_pixels, to_data = ax.transData, ax.transData.inverted()
    height = fontsize * figure.dpi / 72 * 1.3
    placed: list[tuple[float, float, float, float]] = []
    box = ax.get_window_extent()
    for index in np.argsort(-np.asarray(ys)):
        px, py = to_pixels.transform((xs[index], ys[index]))
        width = 0.62 * fontsize * figure.dpi / 72 * len(labels[index])
        for step in range(40):
            dy = height * (0.6 + (step // 2)) * (1 if step % 2 == 0 else -1)
            left = px + 6 if px + 6 + width < box.x1 else px - 6 - width
            bottom = min(max(py + dy - height / 2, box.y0), box.y1 - height)
            candidate = (left, bottom, left + width, bottom + height)
            if all(candidate[2] < b[0] or candidate[0] > b[2] or candidate[3] < b[1] or candidate[1] > b[3]
                   for b in placed):
                break
        placed.append(candidate)
        tx, ty = to_data.transform((candidate[0], candidate[1] + height / 2))
        ax.annotate(labels[index], (xs[index], ys[index]), xytext=(tx, ty), fontsize=fontsize, va="center",
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5}, annotation_clip=False)


def go_dotplot(result, domain=None, *, n_terms: int = 10, title: str | None = None, ax=None,
               colour_range: tuple[float, float] | None = None, save: str | Path | None = None):
    """clusterProfiler-style dot plot of enriched terms.

    GeneRatio on x, term on y (full names, wrapped), colour −log10 p.adjust, size Count.

    Parameters
    ----------
    result : pandas.DataFrame
        The table from :func:`spatialdomains.analysis.enrich_go`.
    domain : str or None, optional
        The domain whose rows are drawn (compared as text); None draws the first rows of the whole table.
    n_terms : int, optional
        How many terms to draw.
    title : str or None, optional
        The title; by default the domain.
    ax : matplotlib.axes.Axes or None, optional
        The axis to draw on; by default a new figure.
    colour_range : tuple of float or None, optional
        The −log10 p.adjust range of the colour scale, to share one scale across domains; by default this
        plot's own.
    save : str or pathlib.Path or None, optional
        A file to write the figure to, atomically; its suffix sets the format.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, for further editing.
    """
    import textwrap

    import matplotlib.pyplot as plt

    rows = result if domain is None else result[result["domain"].astype(str) == str(domain)]
    rows = rows.head(n_terms)
    ratio = rows["GeneRatio"].map(lambda r: int(r.split("/")[0]) / int(r.split("/")[1])).to_numpy(dtype=float)
    order = np.argsort(ratio, kind="stable")
    labels = [textwrap.fill(str(d), 38) for d in rows["Description"].to_numpy()[order]]
    lines = sum(label.count("\n") + 1 for label in labels)
    figure, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8.5, 0.3 * max(lines, 3) + 1.4))
    if rows.empty:
        ax.text(0.5, 0.5, "no enriched term", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        largest = max(1, int(rows["Count"].max()))
        significance = -np.log10(np.maximum(rows["p.adjust"].to_numpy(dtype=float), np.nextafter(0, 1)))[order]
        low, high = colour_range or (float(significance.min()), float(significance.max()))
        points = ax.scatter(ratio[order], np.arange(len(rows)), s=_count_size(rows["Count"].to_numpy()[order], largest),
                            c=significance, cmap="Reds", vmin=low, vmax=max(high, low + 1e-9), edgecolors="grey",
                            linewidths=0.3)
        ax.set_yticks(np.arange(len(rows)), labels=labels, fontsize=10)
        ax.set_xlabel("GeneRatio")
        ax.margins(x=0.25, y=0.08)
        bar = figure.colorbar(points, ax=ax, shrink=0.7, label="−log10 p.adjust")
        bar.formatter.set_useOffset(False)
        for count in sorted({int(rows["Count"].min()), int(rows["Count"].max())}):
            ax.scatter([], [], s=_count_size(count, largest), color="grey", label=str(count))
        ax.legend(title="Count", loc="lower right", frameon=False, fontsize=9)
    ax.set_title(title or (f"domain {domain}" if domain is not None else "GO enrichment"))
    return _finish(figure, save)


def _count_size(count, largest: int):
    return 30 + 170 * np.asarray(count, dtype=float) / largest


def _categorical(adata: ad.AnnData, key: str):
    if key not in adata.obs:
        raise InputError(f"obs['{key}'] does not exist (obs columns: {', '.join(adata.obs)})")
    return adata.obs[key].astype("category")


def domain_colours(n: int) -> list[str]:
    """The colours the figures give to ``n`` domains, in category order.

    Parameters
    ----------
    n : int
        The number of domains.

    Returns
    -------
    list of str
        Hex colours.
    """
    from matplotlib.colors import to_hex

    palette = _palette(n)
    return [to_hex(palette(i)) for i in range(n)]


def _palette(n: int):
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab20" if n > 10 else "tab10")


def _finish(figure, save: str | Path | None):
    if save is not None:
        with atomic_path(save) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(save).suffix.lstrip(".") or "png")
    return figure
