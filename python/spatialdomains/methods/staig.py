"""STAIG as a method: its configuration and presets, features, graph, training and outputs.

The mathematics (encoder, augmentations, the blocked neighbour-contrastive loss) is in
:mod:`spatialdomains.models.staig`; the image features in :mod:`spatialdomains.image`.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from .. import graph as _graph
from .. import pp as _pp
from ..errors import InputError, option
from ..models.minibatch import BatchSettings
from ..models.staig import EDGE_DROP_MODES
from ._expression import ExpressionInputs, checked_inputs, library_size
from .base import Method, RunConfig, check_settings

logger = logging.getLogger("spatialdomains")

#: Highly variable genes per slice before intersecting, for several slices (the method note's 5000).
MULTI_SLICE_TOP_GENES = 5000
SINGLE_SLICE_TOP_GENES = 3000


@dataclass(frozen=True)
class StaigConfig:
    """STAIG's options. Defaults are the paper's (``preset='paper'``).

    n_epochs, learning_rate, weight_decay, tau
        Training length (None: 400 epochs at full batch; in the large-data mode, enough epochs for about 2,000
        mini-batch steps, at most 400), Adam's learning rate and weight decay, temperature of the contrastive loss.
    n_neighbors
        k of the spatial kNN graph (5).
    n_top_genes, gene_selection
        Genes used as features (None: 3000 for one slice; 5000 per slice, then intersected, for several), chosen
        by ``'seurat_v3'`` (highly variable on raw counts, published), ``'mvp'`` (mean–variance plot) or
        ``'spatial'`` (largest Moran's I on the spots' 6-neighbour graph).
    hidden_dim, n_layers
        Embedding size (64) and GCN layers (1, or 2 for F → 128 → 64).
    edge_drop, edge_drop_rate
        ``'fixed'`` (each edge dropped with probability ``edge_drop_rate``), ``'gene_adaptive'`` or ``'image'``
        (edges between spots that look different dropped more often; the default with an image).
    feature_mask
        Gene-masking rates of the two views.
    positives
        ``'full'``: neighbours in the full graph are positives (published); ``'view'``: in each view (paper text).
    n_pseudo_labels, debias
        One slice with an image: k-means of the image features into ``n_pseudo_labels`` groups; with ``debias``
        spots of the anchor's group are not its negatives.
    n_resamples
        0 (published): the embedding is the model's output on the full graph. n ≥ 1: the mean of its outputs on
        n edge sets sampled as the training views are (the paper's optional resampling step), which steadies
        the embedding against the draw of any one graph.
    memory_budget_mb
        Memory for one block of the N×N loss computation.
    layer, library_size_key
        Layer holding raw counts, if not ``X``; ``obs`` column with the true per-spot totals when ``X`` holds
        only a subset of the genes.
    use_image, image_key, image_options
        Use H&E image features from ``obsm[image_key]``: None (when they are there), True (computed per slice
        with ``image_options``, the keyword arguments of :func:`spatialdomains.tl.image_features`, when
        missing; an input without any image runs from gene expression alone, with a warning) or False.
    """

    n_epochs: int | None = None
    learning_rate: float = 5e-4
    weight_decay: float = 1e-5
    tau: float = 10.0
    n_neighbors: int = 5
    n_top_genes: int | None = None
    gene_selection: str = "seurat_v3"
    hidden_dim: int = 64
    n_layers: int = 1
    edge_drop: str = "fixed"
    edge_drop_rate: float = 0.2
    feature_mask: tuple[float, float] = (0.1, 0.2)
    positives: str = "full"
    n_pseudo_labels: int = 40
    debias: bool = True
    n_resamples: int = 0
    memory_budget_mb: float = 256.0
    layer: str | None = None
    library_size_key: str | None = None
    use_image: bool | None = None
    image_key: str = "X_image"
    image_options: dict | None = None

    def __post_init__(self) -> None:
        check_settings("STAIG", self, {
            "n_epochs": (self.n_epochs is None or self.n_epochs >= 1, "at least 1"),
            "tau": (self.tau > 0, "above 0"),
            "n_neighbors": (self.n_neighbors >= 1, "at least 1"),
            "n_top_genes": (self.n_top_genes is None or self.n_top_genes >= 1, "at least 1, or None for all genes"),
            "gene_selection": (self.gene_selection in _pp.GENE_SELECTIONS,
                               f"one of {', '.join(_pp.GENE_SELECTIONS)}"),
            "n_layers": (self.n_layers in (1, 2), "1 or 2"),
            "edge_drop": (self.edge_drop in EDGE_DROP_MODES, f"one of {', '.join(EDGE_DROP_MODES)}"),
            "edge_drop_rate": (0 <= self.edge_drop_rate <= 1, "between 0 and 1"),
            "feature_mask": (len(self.feature_mask) == 2 and all(0 <= r < 1 for r in self.feature_mask),
                             "two rates in [0, 1)"),
            "positives": (self.positives in ("full", "view"), "'full' or 'view'"),
            "n_pseudo_labels": (self.n_pseudo_labels >= 2, "at least 2"),
            "n_resamples": (isinstance(self.n_resamples, (int, np.integer)) and not isinstance(self.n_resamples, bool)
                            and self.n_resamples >= 0, "a whole number of at least 0"),
            "memory_budget_mb": (self.memory_budget_mb > 0, "above 0"),
            "image_options": (self.image_options is None or isinstance(self.image_options, dict), "a dict or None"),
        })
        unknown = sorted(set(self.image_options or {}) - image_option_names())
        if unknown:
            raise InputError(f"image_options: unknown option(s) {', '.join(unknown)}; they are the arguments of "
                             f"spatialdomains.tl.image_features: {', '.join(sorted(image_option_names()))}")


def image_option_names() -> set[str]:
    """What ``image_options`` may hold: :func:`image_features`' own arguments, less those the run sets."""
    import inspect

    from ..image.features import image_features

    return set(inspect.signature(image_features).parameters) - {"data", "batch_key", "device", "progress",
                                                                 "key_added"}


#: Cells rather than spots (Xenium, MERFISH, CosMx): the published MERFISH config's k = 8 and two GCN layers,
#: so that each cell's embedding reads the two rings of cells around it (about 28 cells), the scale at which tissue
#: niches show in the mix of cell types; one layer over 5 neighbours reads about 7 cells.
CELL_RESOLUTION = {"n_neighbors": 8, "n_layers": 2}

#: ``paper``: the paper's settings. ``published``: the published code's configs for DLPFC 151673, without and
#: with the H&E image (``IMAGE_PRESETS``, used when image features are used). ``cells``: the paper's settings
#: with :data:`CELL_RESOLUTION`.
PRESETS: dict[str, dict] = {
    "paper": {},
    "published": {"tau": 34.0, "n_epochs": 340, "feature_mask": (0.2, 0.2), "edge_drop": "gene_adaptive"},
    "cells": dict(CELL_RESOLUTION),
}
IMAGE_PRESETS: dict[str, dict] = {
    "paper": {"edge_drop": "image"},
    "published": {"tau": 35.0, "n_epochs": 300, "feature_mask": (0.1, 0.2), "edge_drop": "image",
                  "n_pseudo_labels": 80},
    "cells": {"edge_drop": "image", **CELL_RESOLUTION},
}


class Staig(Method):
    name = "staig"
    title = "STAIG"
    minibatch = True
    config_class = StaigConfig

    def default_preset(self) -> str:
        return "paper"

    def preset_names(self) -> tuple[str, ...]:
        return tuple(PRESETS)

    def presets(self, data, overrides: dict) -> dict[str, dict]:
        """The presets, in their image variants when image features will be used."""
        config = StaigConfig(**{k: v for k, v in overrides.items() if k in ("use_image", "image_key", "image_options")})
        return IMAGE_PRESETS if _resolve_use_image(data, config, quiet=True) else PRESETS

    def resolve(self, data, config: StaigConfig) -> StaigConfig:
        return dataclasses.replace(config, use_image=_resolve_use_image(data, config))

    def prepare_slices(self, slices, config: StaigConfig, run: RunConfig) -> None:
        """Image features are made per slice (each with its own image, z-score and PCA) before combining."""
        # With image_options given, image_features itself decides whether stored features can be reused.
        wanted = [adata for adata in slices if config.image_options or config.image_key not in adata.obsm]
        if not config.use_image or not wanted:
            return
        from .. import slices as _slices
        from ..image.features import image_features

        for adata in slices:  # the cheap input checks, before the image model trains
            checked = checked_inputs(adata, config, run.batch_key if len(slices) == 1 else None,
                                     config.n_neighbors).checked
            library_size(adata, config.library_size_key, checked.spots)
        if len(slices) > 1:
            _slices.check_combinable(slices, run.batch_key)
        image_features(wanted if len(slices) > 1 else wanted[0],
                       batch_key=run.batch_key if len(slices) == 1 else None, device=run.device,
                       progress=run.progress, key_added=config.image_key, **dict(config.image_options or {}))

    def inputs(self, adata, config: StaigConfig, run: RunConfig, timer) -> ExpressionInputs:
        with timer("preprocess"):
            inputs = checked_inputs(adata, config, run.batch_key, config.n_neighbors)
            config = inputs.settle("n_top_genes", SINGLE_SLICE_TOP_GENES, MULTI_SLICE_TOP_GENES)
            totals = library_size(adata, config.library_size_key, inputs.checked.spots)
            totals = None if totals is None else totals[inputs.layout.order]
            if inputs.several_slices:
                inputs.features, inputs.genes = _pp.multi_slice_features(
                    inputs.counts_in_order(), inputs.layout.bounds, n_top_genes=config.n_top_genes,
                    normalise_over="all", slice_names=inputs.layout.names, library_size=totals,
                    gene_selection=config.gene_selection, coordinates=inputs.coordinates)
            else:
                inputs.features, inputs.genes = _pp.staig_features(
                    inputs.checked.counts, library_size=totals, n_top_genes=config.n_top_genes,
                    gene_selection=config.gene_selection, coordinates=inputs.checked.coordinates)
        with timer("graph"):
            inputs.adjacency = _graph.multi_slice_graph(inputs.coordinates, inputs.slice_codes, "knn",
                                                        n_neighbors=config.n_neighbors)
        if config.use_image:
            image = np.asarray(adata.obsm[config.image_key], dtype=np.float32)[inputs.checked.spots]
            if not np.all(np.isfinite(image)):
                raise InputError(f"obsm['{config.image_key}'] has missing values for spots with counts: recompute "
                                 "it with spatialdomains.tl.image_features")
            inputs.extra["image"] = image[inputs.layout.order]
        return inputs

    def train(self, inputs: ExpressionInputs, config: StaigConfig, run: RunConfig, device):
        from ..models.staig import train_staig

        return train_staig(inputs.features, inputs.adjacency, config, slice_bounds=inputs.layout.bounds,
                           image_features=inputs.extra.get("image"), device=device, random_state=run.random_state,
                           progress=run.progress, checkpoint=run.checkpoint, training=run.training,
                           batch=BatchSettings(run.batch_size), coordinates=inputs.coordinates)

    def store(self, adata, inputs: ExpressionInputs, result, config: StaigConfig, run: RunConfig) -> dict:
        key = self.embedding_key(run)
        adata.obsm[key] = inputs.to_input_rows(result.embedding)
        adata.obsm[f"{key}_encoder"] = inputs.to_input_rows(result.encoder_embedding)
        return {**inputs.record(run.batch_key), "image_key": config.image_key if config.use_image else None,
                "n_edges": int(inputs.adjacency.nnz // 2)}

    def handed_back(self, config: StaigConfig, run: RunConfig) -> list[str]:
        key = self.embedding_key(run)
        return [key, f"{key}_encoder"]


def _resolve_use_image(data, config: StaigConfig, quiet: bool = False) -> bool:
    """Whether image features will be used: ``use_image=None`` means when every slice already holds them;
    ``True`` needs an image (or the features) in every slice, and runs from expression alone, with a
    warning, when none has any."""
    from .. import slices as _slices
    from ..image.features import find_image

    several = isinstance(data, (list, tuple, dict))
    slices = _slices.as_list(data) if several else [data]
    names = _slices.slice_names_of(data) if several else ["the input"]
    key = config.image_key
    if config.use_image is None:
        found = all(key in adata.obsm for adata in slices)
        if found and not quiet:
            logger.info("STAIG: using the image features in obsm['%s']", key)
        return found
    if not config.use_image:
        return False
    options = dict(config.image_options or {})
    has_image = [key in adata.obsm or _has_image(adata, options, find_image) for adata in slices]
    if not any(has_image):
        if not quiet:
            logger.warning("STAIG: %s but the input has no tissue image (uns['spatial'] holds none and no image was "
                           "given); running from gene expression only. Give the image with %s to use one",
                           option("use_image", True), option("image_options", {"image": "...", "image_scale": "..."}))
        return False
    if not all(has_image):
        lacking = [name for name, ok in zip(names, has_image) if not ok]
        raise InputError(f"{option('use_image', True)}, but slice(s) {', '.join(lacking)} have no tissue image: give "
                         f"every slice its image (uns['spatial'] or the Space Ranger folder's), or run "
                         f"{option('use_image', False)}")
    return True


def _has_image(adata, options: dict, find_image) -> bool:
    libraries = adata.uns.get("spatial", {})
    if options.get("image") is not None or len(libraries) > 1:
        return True  # an image given, or one per library (checked when the features are made)
    return find_image(adata, None, None, options.get("library_id")) is not None

