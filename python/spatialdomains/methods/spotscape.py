"""Spotscape as a method: its configuration, features, graph, training and outputs (the denoised expression
among them). The mathematics is in :mod:`spatialdomains.models.spotscape`."""
from __future__ import annotations

import logging
import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import graph as _graph
from .. import pp as _pp
from .._record import UNS_KEY
from ..errors import InputError, option
from ..models.minibatch import BatchSettings
from ._decoded import Denoised, log_normalised, raw_counts
from ._expression import ExpressionInputs, checked_inputs
from .base import Method, RunConfig, check_settings

logger = logging.getLogger("spatialdomains")

#: Adam's learning rate for one slice (the method note) and for several (the paper's multi-slice DLPFC value).
SINGLE_SLICE_LEARNING_RATE = 1e-4
MULTI_SLICE_LEARNING_RATE = 5e-4
#: Where the decoder output goes (``layers`` when it covers all genes of the AnnData, else ``obsm``).
DENOISED_KEY = "spotscape_denoised"


@dataclass(frozen=True)
class SpotscapeConfig:
    """Spotscape's options; defaults from the method note.

    n_domains
        Expected number of domains; sets the prototype counts (n, 1.5n, 2n). Never taken from labels; when not
        given, chosen by silhouette at the end of the warm-up (and used by :func:`find_domains` too).
    n_epochs, learning_rate, weight_decay
        Training length (None: 1000 epochs in full batch; about 2,000 steps in the large-data mode), Adam's
        learning rate (None: 1e-4 for one slice, 5e-4 for several).
    n_top_genes, gene_selection
        Genes used (5000, per slice), chosen by ``'seurat_v3'`` (highly variable on raw counts, published),
        ``'mvp'`` (mean–variance plot) or ``'spatial'`` (largest Moran's I on the spots' 6-neighbour graph).
    graph, radius, max_neighbors, n_neighbors
        ``'radius'`` (radius 1.5 × the median nearest-neighbour distance unless given, at most
        ``max_neighbors``; as published for spot lattices), ``'knn'`` (``n_neighbors`` nearest, for irregular
        cell-level coordinates) or ``'auto'`` (radius on lattices such as Visium spots and Visium HD bins, kNN on
        cell centroids such as Xenium's; the record's config says which ran). ``radius`` is in coordinate units.
    batch_norm_momentum
        Momentum of the batch norms (0.1; the published code's 0.99 is available).
    prototypes, warmup_epochs
        Use the prototypical loss (None: with several slices only), from epoch ``warmup_epochs`` on (None: 500 in
        full batch, as published; half of the epochs in the large-data mode).
    ss_mode
        ``'per_slice'`` (the anchor's own slice against each other slice) or ``'pooled'``.
    layer
        Layer holding raw counts, if not ``X``.
    The loss weights (``lambda_*``), view settings and prototype granularities follow the method note.
    """

    n_domains: int | None = None
    n_epochs: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    dims: tuple[int, ...] = (256, 64)
    n_top_genes: int = 5000
    gene_selection: str = "seurat_v3"
    edge_drop: tuple[float, float] = (0.2, 0.2)
    feature_mask: tuple[float, float] = (0.2, 0.2)
    lambda_rec: float = 0.1
    lambda_sc: float = 1.0
    lambda_ss: float = 1.0
    lambda_pcl: float = 0.01
    sim_k: int = 5
    ss_mode: str = "per_slice"
    ss_exclude_self: bool = False
    prototypes: bool | None = None
    tau_pcl: float = 0.75
    warmup_epochs: int | None = None
    granularities: tuple[float, ...] = (1.0, 1.5, 2.0)
    batch_norm_momentum: float = 0.1
    graph: str = "auto"
    radius: float | None = None
    max_neighbors: int = 50
    n_neighbors: int = 6
    memory_budget_mb: float = 256.0
    layer: str | None = None

    def __post_init__(self) -> None:
        check_settings("Spotscape", self, {
            "n_domains": (self.n_domains is None or self.n_domains >= 2, "at least 2, or None to choose it"),
            "n_epochs": (self.n_epochs is None or self.n_epochs >= 1, "at least 1"),
            "learning_rate": (self.learning_rate is None or self.learning_rate > 0, "above 0"),
            "dims": (len(self.dims) >= 2 and all(d >= 1 for d in self.dims), "at least two sizes of at least 1"),
            "edge_drop": (len(self.edge_drop) == 2 and all(0 <= p < 1 for p in self.edge_drop), "two rates in [0, 1)"),
            "feature_mask": (len(self.feature_mask) == 2 and all(0 <= p < 1 for p in self.feature_mask),
                             "two rates in [0, 1)"),
            "gene_selection": (self.gene_selection in _pp.GENE_SELECTIONS,
                               f"one of {', '.join(_pp.GENE_SELECTIONS)}"),
            "sim_k": (self.sim_k >= 1, "at least 1"),
            "ss_mode": (self.ss_mode in ("per_slice", "pooled"), "'per_slice' or 'pooled'"),
            "tau_pcl": (self.tau_pcl > 0, "above 0"),
            "warmup_epochs": (self.warmup_epochs is None or self.warmup_epochs >= 0, "at least 0"),
            "granularities": (len(self.granularities) >= 1 and all(g >= 1 for g in self.granularities),
                              "one or more counts of at least 1"),
            "batch_norm_momentum": (0 < self.batch_norm_momentum <= 1, "in (0, 1]"),
            "graph": (self.graph in ("auto", "radius", "knn"), "'auto', 'radius' or 'knn'"),
            "radius": (self.radius is None or self.radius > 0, "above 0, or None to measure it"),
            "memory_budget_mb": (self.memory_budget_mb >= 0, "at least 0"),
        })


class Spotscape(Method):
    name = "spotscape"
    title = "Spotscape"
    config_class = SpotscapeConfig
    minibatch = True
    # Spotscape's published clusterer; its ReLU embedding (many exact zeros) makes an EEE mixture degenerate:
    # on a million simulated cells mclust gave ARI 0.12 where k-means gave 0.93 on the same embedding
    cluster_auto = "kmeans"
    decodes = True

    def inputs(self, adata, config: SpotscapeConfig, run: RunConfig, timer) -> ExpressionInputs:
        with timer("preprocess"):
            inputs = checked_inputs(adata, config, run.batch_key, config.n_neighbors)
            config = inputs.settle("learning_rate", SINGLE_SLICE_LEARNING_RATE, MULTI_SLICE_LEARNING_RATE)
            if inputs.several_slices:
                inputs.features, inputs.genes = _pp.multi_slice_features(
                    inputs.counts_in_order(), inputs.layout.bounds, n_top_genes=config.n_top_genes,
                    normalise_over="hvgs", slice_names=inputs.layout.names,
                    gene_selection=config.gene_selection, coordinates=inputs.coordinates)
            else:
                inputs.features, inputs.genes = _pp.spotscape_features(
                    inputs.checked.counts, n_top_genes=config.n_top_genes, gene_selection=config.gene_selection,
                    coordinates=inputs.checked.coordinates)
        with timer("graph"):
            if config.graph == "auto":
                lattice = inputs.space["layout"] == "lattice"
                inputs.config = dataclasses.replace(config, graph="radius" if lattice else "knn")
                logger.info("Spotscape: %s graph, as the spots lie %s", inputs.config.graph,
                            "on a regular lattice" if lattice else "irregularly (cells)")
            inputs.adjacency = spotscape_graph(inputs, inputs.config)
        return inputs

    def train(self, inputs: ExpressionInputs, config: SpotscapeConfig, run: RunConfig, device):
        from ..models.spotscape import train_spotscape

        return train_spotscape(inputs.features, inputs.adjacency, config, slice_bounds=inputs.layout.bounds,
                               n_domains=config.n_domains, device=device, random_state=run.random_state,
                               progress=run.progress, checkpoint=run.checkpoint, training=run.training,
                               batch=_batches(run.batch_size, inputs.layout.n_slices),
                               coordinates=inputs.coordinates)

    def store(self, adata, inputs: ExpressionInputs, result, config: SpotscapeConfig, run: RunConfig) -> dict:
        """The embedding into ``obsm``; the decoder output (log-normalised scale, over the genes used) into
        ``layers['spotscape_denoised']`` when those are all the AnnData's genes, else ``obsm``; its columns'
        genes are named in the record (``denoised_genes``) either way."""
        adata.obsm[self.embedding_key(run)] = inputs.to_input_rows(result.embedding)
        record = inputs.record(run.batch_key)
        adata.layers.pop(DENOISED_KEY, None)  # an earlier run's values, in whichever place, never linger
        adata.obsm.pop(DENOISED_KEY, None)
        record["mean_degree"] = float(inputs.adjacency.nnz / inputs.adjacency.shape[0])
        if result.denoised is None:  # the large-data mode above spots × genes it can hold
            return record
        denoised = inputs.to_input_rows(result.denoised)
        if len(inputs.genes) == adata.n_vars:
            adata.layers[DENOISED_KEY] = denoised[:, np.argsort(inputs.genes)]
            record["denoised_genes"] = np.asarray(adata.var_names, dtype=str)
        else:
            adata.obsm[DENOISED_KEY] = denoised
            record["denoised_genes"] = record["genes"]
        return record

    def handed_back(self, config: SpotscapeConfig, run: RunConfig) -> list[str]:
        return [self.embedding_key(run), DENOISED_KEY]

    def chosen_n_domains(self, record: dict) -> int | None:
        choice = record.get("training", {}).get("prototype_choice")
        return None if not choice else int(choice["n_domains"])

    def has_denoised(self, holder) -> bool:
        return DENOISED_KEY in getattr(holder, "layers", {}) or DENOISED_KEY in holder.obsm

    def denoised(self, holder, modality: str | None) -> Denoised:
        """The decoder's log-normalised expression over the genes Spotscape used."""
        record = holder.uns[UNS_KEY][self.name]
        names = np.asarray(record["denoised_genes"], dtype=str)
        columns = holder.var_names.get_indexer(names)
        if (columns < 0).any():
            raise InputError(f"{int((columns < 0).sum())} genes of the {self.name} run are no longer in var_names: "
                             f"train again ({option('retrain', True)})")
        in_layers = DENOISED_KEY in holder.layers
        return Denoised(values=holder.layers[DENOISED_KEY] if in_layers else holder.obsm[DENOISED_KEY],
                        columns=columns if in_layers else None, features=holder.var.iloc[columns],
                        counts=raw_counts(holder, record.get("parameters", {}).get("layer")),
                        feature_columns=columns, scale=lambda counts: log_normalised(counts[:, columns]),
                        scale_name="log1p of counts per 10,000 over the genes used", holder=holder,
                        modality="rna", spatial_uns={})


def _batches(batch_size: int, n_slices: int) -> BatchSettings:
    """The large-data mode's batches. One slice: whole spatial patches (their neighbourhoods overlap, so a step
    computes few extra spots). Several: anchors drawn one by one at random, because similarity-scale matching
    compares each anchor with every other slice in its batch, so the batch must sample each slice's whole tissue
    (with patches, STARmap's integration fell from ARI 0.74 to 0.23; with single spots it gave 0.71)."""
    return BatchSettings(batch_size, patch_size=1 if n_slices > 1 else BatchSettings.patch_size)


def spotscape_graph(inputs: ExpressionInputs, config: SpotscapeConfig):
    """One graph per slice (radius, at most ``max_neighbors``; or kNN), joined block-diagonally, with a warning
    for each slice whose radius graph is too sparse (irregular coordinates)."""
    if config.graph == "knn":
        return _graph.multi_slice_graph(inputs.coordinates, inputs.slice_codes, "knn",
                                        n_neighbors=config.n_neighbors)
    adjacency = _graph.multi_slice_graph(inputs.coordinates, inputs.slice_codes, "radius", radius=config.radius,
                                         max_neighbors=config.max_neighbors)
    degree = np.diff(adjacency.indptr)
    for name, (start, end) in zip(inputs.layout.names, inputs.layout.bounds):
        part = degree[start:end]
        if part.mean() < 3 or np.mean(part == 0) > 0.05:
            where = f" in slice {name}" if inputs.layout.n_slices > 1 else ""
            logger.warning("the radius graph is sparse%s (mean degree %.1f, %.1f%% isolated spots); for "
                           "irregular coordinates such as cell centroids use %s", where, part.mean(),
                           100 * np.mean(part == 0), option("graph", "knn"))
    return adjacency

