"""SpaMI and the smoothed-PCA baseline as methods: paired omics (RNA + protein, RNA + ATAC) measured on the same
spots of one section. The mathematics is in :mod:`spatialdomains.models.spami`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .. import graph as _graph
from .. import pp as _pp
from .._record import UNS_KEY, store_rows
from ..errors import InputError, option
from ..models.minibatch import DENOISED_LIMIT, BatchSettings
from ._decoded import Denoised, log_normalised, rows_to
from .base import Method, RunConfig, check_settings

logger = logging.getLogger("spatialdomains")


@dataclass(frozen=True)
class OmicsOptions:
    """How the modalities are read and preprocessed (SpaMI and the baseline).

    modality_kinds
        What each modality holds ('rna', 'adt' or 'atac') when its name or ``var['feature_types']`` does not say.
    layers
        Modality name → layer holding its raw counts, for modalities whose ``X`` is not raw.
    n_pcs, n_top_genes, min_cells
        RNA: principal components (50), highly variable genes (3000, scanpy's 'seurat' flavour) and the minimum
        number of spots a gene is detected in (10). ATAC uses ``n_pcs`` LSI components.
    """

    modality_kinds: dict | None = None
    layers: dict | None = None
    n_pcs: int = 50
    n_top_genes: int = 3000
    min_cells: int = 10


@dataclass(frozen=True)
class SpamiConfig(OmicsOptions):
    """SpaMI's options; defaults from the method note unless docs/methods.md says otherwise.

    n_epochs, learning_rate, weight_decay
        Training length (None: 1000 epochs in full batch, as published; about 2,000 steps in the large-data mode,
        above 10,000 spots), Adam's learning rate (1e-3) and weight decay.
    hidden_dim, out_dim, dropout
        Encoder sizes (256 → 64) and input dropout.
    n_neighbors
        k of the spatial kNN graph shared by the omics (3); the readout averages each spot and its k nearest.
    dgi_weights, reconstruction_weights, correspondence_weight
        One DGI and one reconstruction weight per modality, in modality order (the note's w0, w1 and w2, w3:
        1, 1 and 10, 10), and the weight of the cosine correspondence between the omics (w4: 5).
    min_spots
        Protein: drop antibodies detected in fewer spots (0 keeps every antibody).
    balance
        Centre each modality's features and scale them to mean variance 1 before training (see
        docs/methods.md: without it the RNA reconstruction dominates and the attention collapses onto RNA).
        False trains on the published scale. Reconstructions are returned on the preprocessed scale either way.
    Also :class:`OmicsOptions`.
    """

    n_epochs: int | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    hidden_dim: int = 256
    out_dim: int = 64
    dropout: float = 0.15
    n_neighbors: int = 3
    dgi_weights: tuple[float, ...] = (1.0, 1.0)
    reconstruction_weights: tuple[float, ...] = (10.0, 10.0)
    correspondence_weight: float = 5.0
    min_spots: int = 0
    balance: bool = True

    def __post_init__(self) -> None:
        check_settings("SpaMI", self, {
            "n_epochs": (self.n_epochs is None or self.n_epochs >= 1, "at least 1"),
            "learning_rate": (self.learning_rate > 0, "above 0"),
            "weight_decay": (self.weight_decay >= 0, "at least 0"),
            "hidden_dim": (self.hidden_dim >= 1, "at least 1"),
            "out_dim": (self.out_dim >= 1, "at least 1"),
            "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
            "n_neighbors": (self.n_neighbors >= 1, "at least 1"),
            "dgi_weights": (all(w >= 0 for w in self.dgi_weights), "weights of at least 0"),
            "reconstruction_weights": (all(w >= 0 for w in self.reconstruction_weights), "weights of at least 0"),
            "correspondence_weight": (self.correspondence_weight >= 0, "at least 0"),
            "min_spots": (self.min_spots >= 0, "at least 0"),
        })


@dataclass(frozen=True)
class BaselineConfig(OmicsOptions):
    """The baseline's options: ``smoothing_spots`` (7) is how many spots are averaged, the spot included.
    Also :class:`OmicsOptions`."""

    smoothing_spots: int = 7

    def __post_init__(self) -> None:
        check_settings("baseline", self, {"smoothing_spots": (self.smoothing_spots >= 1, "at least 1 (the spot itself)")})


@dataclass
class OmicsInputs:
    """The paired modalities, their features, the shared graph and where the results go."""

    config: object
    pair: object
    container: object
    features: list = field(default_factory=list)
    adjacency: sp.csr_matrix | None = None
    neighbours: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        return self.container.obs_names.get_indexer(self.pair.spot_names)

    def record(self) -> dict:
        return {"modalities": np.asarray(self.pair.names, dtype=str),
                "kinds": np.asarray(self.pair.kinds, dtype=str),
                "n_spots_used": len(self.pair.spot_names),
                "n_spots_not_in_every_modality": self.pair.n_unmatched,
                "n_spots_without_counts": self.pair.n_empty}


class _Omics(Method):
    """Paired omics of one section: the modalities are paired and preprocessed the same way for both methods."""

    kind = "omics"
    auto_refine = False  # SpaMI's protocol clusters the embedding as it is

    def paired(self, data, config, run: RunConfig, timer) -> OmicsInputs:
        from .. import modalities as _modalities

        if run.batch_key is not None:
            raise InputError(f"{self.title} handles one section (its modalities in a MuData or a dict); for "
                             "several slices use method='staig' or 'spotscape'")
        with timer("preprocess"):
            pair = _modalities.pair_modalities(data, modality_kinds=config.modality_kinds, layers=config.layers)
            inputs = OmicsInputs(config=config, pair=pair, container=result_container(data))
            inputs.features = [_pp.omics_features(counts, kind, n_pcs=config.n_pcs, n_top_genes=config.n_top_genes,
                                                  min_cells=config.min_cells,
                                                  min_spots=getattr(config, "min_spots", 0),
                                                  random_state=run.random_state)
                               for counts, kind in zip(pair.counts, pair.kinds)]
        return inputs


#: SpaMI's published per-dataset settings (the method note, section 6): loss weights w0..w4 as DGI, reconstruction
#: and correspondence weights, learning rate, epochs, neighbours; thymus also its 21 RNA PCs and protein filter.
#: 'default' is the model default, used for the simulations. 'cells' (Xenium-like cells with a protein panel):
#: the p22 config's 6 neighbours, so that the two-layer encoders read about 21 cells around each cell, nearer the
#: scale at which tissue niches show in the mix of cell types (3 neighbours: about 10).
SPAMI_PRESETS = {
    "default": {},
    "cells": {"n_neighbors": 6},
    "misar": {"dgi_weights": (1.0, 1.0), "reconstruction_weights": (10.0, 15.0), "correspondence_weight": 3.0,
              "learning_rate": 1e-2, "n_epochs": 800, "n_neighbors": 3},
    "p22": {"dgi_weights": (1.0, 1.0), "reconstruction_weights": (10.0, 15.0), "correspondence_weight": 5.0,
            "learning_rate": 1e-3, "n_epochs": 400, "n_neighbors": 6},
    "thymus": {"dgi_weights": (1.0, 5.0), "reconstruction_weights": (10.0, 25.0), "correspondence_weight": 1.0,
               "learning_rate": 1e-4, "n_epochs": 600, "n_neighbors": 3, "n_pcs": 21, "min_spots": 50},
}


class Spami(_Omics):
    name = "spami"
    title = "SpaMI"
    config_class = SpamiConfig
    minibatch = True
    decodes = True
    attention = True
    min_modalities = 2

    def preset_names(self) -> tuple[str, ...]:
        return tuple(SPAMI_PRESETS)

    def presets(self, data, overrides: dict) -> dict[str, dict]:
        """SpaMI's published settings per dataset type: 'misar' (MISAR-seq RNA + ATAC), 'p22' (spatial ATAC–RNA-seq),
        'thymus' (Stereo-CITE-seq RNA + protein); 'cells' for data at cell resolution; 'default' otherwise.
        Options given override them."""
        return SPAMI_PRESETS

    def inputs(self, data, config: SpamiConfig, run: RunConfig, timer) -> OmicsInputs:
        inputs = self.paired(data, config, run, timer)
        if len(inputs.pair.names) == 1:
            logger.info("SpaMI with one modality ('%s'): no correspondence term, attention weight 1",
                        inputs.pair.names[0])
        with timer("graph"):
            if len(inputs.pair.spot_names) <= config.n_neighbors:
                raise InputError(f"{len(inputs.pair.spot_names)} spots cannot have {config.n_neighbors} "
                                 "neighbours: lower n_neighbors")
            # The readout averages each spot's own graph neighbours (a subset of them, as published).
            inputs.neighbours = _graph.nearest_other_spots(inputs.pair.coordinates, config.n_neighbors)
            inputs.adjacency = _graph.adjacency_from_neighbours(inputs.neighbours)
        return inputs

    def train(self, inputs: OmicsInputs, config: SpamiConfig, run: RunConfig, device):
        from ..models.spami import train_spami

        scaled = [_pp.balance_scale(f.x) if config.balance else (f.x, np.zeros(f.x.shape[1], np.float32), 1.0)
                  for f in inputs.features]
        result = train_spami([x for x, _, _ in scaled], inputs.adjacency, inputs.neighbours, config, device=device,
                             random_state=run.random_state, progress=run.progress, checkpoint=run.checkpoint,
                             training=run.training, batch=BatchSettings(run.batch_size),
                             coordinates=inputs.pair.coordinates)
        rna = [f for f in inputs.features if f.kind == "rna"]
        result.record["denoised_kept"] = not rna or len(rna[0].x) * rna[0].loadings.shape[0] <= DENOISED_LIMIT
        result.reconstructions = [r * scale + centre for r, (_, centre, scale) in zip(result.reconstructions, scaled)]
        result.record["balance_scales"] = np.asarray([scale for _, _, scale in scaled])
        return result

    def store(self, container, inputs: OmicsInputs, result, config: SpamiConfig, run: RunConfig) -> dict:
        key, rows, pair = self.embedding_key(run), inputs.rows, inputs.pair
        container.obsm.pop("spami_denoised_rna", None)  # an earlier run's values never linger
        store_rows(container, key, result.embedding, rows)
        for name, feature, embedding, reconstruction in zip(pair.names, inputs.features, result.modality_embeddings,
                                                            result.reconstructions):
            store_rows(container, f"{key}_{name}", embedding, rows)
            store_rows(container, f"spami_recon_{name}", reconstruction, rows)
            if feature.kind == "rna" and result.record["denoised_kept"]:
                store_rows(container, "spami_denoised_rna", reconstruction @ feature.loadings.T + feature.mean, rows)
        store_rows(container, "spami_attention", result.attention, rows)
        _store_coordinates(container, pair, rows)
        return {**inputs.record(),
                "features": {name: np.asarray(names[f.features], dtype=str)
                             for name, names, f in zip(pair.names, pair.feature_names, inputs.features)},
                "input_dims": np.asarray([f.x.shape[1] for f in inputs.features]),
                "n_edges": int(inputs.adjacency.nnz // 2)}

    # --- decoder: each modality in its preprocessed space (RNA mapped back to its genes, protein as CLR) ---------
    def has_denoised(self, holder) -> bool:
        return any(key.startswith(("spami_recon_", "spami_denoised_")) for key in holder.obsm)

    def choose_modality(self, names: list[str], kinds: dict, modality: str | None) -> str:
        """The modality to impute: the one named, else the RNA one, else the first decodable; ATAC refused (its
        reconstruction is in LSI space, which does not map back to peaks)."""
        if modality is not None:
            if modality not in names:
                raise InputError(f"{option('modality', modality)} is not a modality here (modalities: "
                                 f"{', '.join(names)})")
            name = modality
        else:
            decodable = [n for n in names if kinds[n] != "atac"]
            name = next((n for n in decodable if kinds[n] == "rna"), decodable[0] if decodable else names[0])
        if kinds[name] == "atac":
            raise InputError(f"modality '{name}' holds ATAC peaks, whose SpaMI reconstruction is in LSI space and "
                             "does not map back to peaks (each spot's components are standardised and the first "
                             f"dropped): impute {option('modality')} RNA or protein instead")
        return name

    def denoised_not_kept(self, record: dict, modality: str | None) -> str | None:
        names = [str(name) for name in record["modalities"]]
        kinds = dict(zip(names, (str(kind) for kind in record["kinds"])))
        if kinds[self.choose_modality(names, kinds, modality)] != "rna":
            return None  # only the RNA back-projection is left out of large runs
        most = DENOISED_LIMIT // max(int(record.get("n_spots_used", 1)), 1)
        return (f"train again with at most {most:,} genes ({option('retrain', True)}, "
                f"{option('n_top_genes', min(most, 3000))}); the other modalities' values are kept")

    def denoised(self, holder, modality: str | None) -> Denoised:
        """SpaMI's reconstruction of one modality, read from the object it trained on (a MuData; or the RNA
        modality alone with the results, as a report's result .h5ad holds it). The log-normalised scale of RNA is
        rebuilt on the spots SpaMI used, over the genes detected in at least ``min_cells`` of them, as its
        preprocessing did."""
        from .. import io as _io
        from ..modalities import infer_kind, modality_mapping

        record = holder.uns[UNS_KEY][self.name]
        parameters = record.get("parameters", {})
        names = [str(name) for name in record["modalities"]]
        kinds = dict(zip(names, (str(kind) for kind in record["kinds"])))
        name = self.choose_modality(names, kinds, modality)
        mapping = modality_mapping(holder)
        if name in mapping:
            part = mapping[name]
        elif isinstance(holder, ad.AnnData) and infer_kind(name, holder, allow_unknown=True) in (None, kinds[name]):
            part = holder  # the modality itself, holding the section's results
        else:
            raise InputError(f"modality '{name}' of the SpaMI run is not in this object (it holds "
                             f"{', '.join(mapping)}): pass the MuData SpaMI trained on")
        key = "spami_denoised_rna" if kinds[name] == "rna" else f"spami_recon_{name}"
        if key not in holder.obsm:
            raise InputError(f"obsm['{key}'] is missing: train again ({option('retrain', True)})")
        columns = part.var_names.get_indexer(np.asarray(record["features"][name], dtype=str))
        if (columns < 0).any():
            raise InputError(f"{int((columns < 0).sum())} features of the SpaMI run are no longer in modality "
                             f"'{name}': train again ({option('retrain', True)})")
        layer = (parameters.get("layers") or {}).get(name)
        counts = rows_to(sp.csr_matrix(_io._expression(part, layer), dtype=np.float32), part.obs_names,
                         holder.obs_names)
        used = np.flatnonzero(np.isfinite(np.asarray(holder.obsm[key], dtype=np.float64)).all(axis=1))
        if kinds[name] == "rna":
            detected = np.flatnonzero(np.asarray((counts[used] > 0).sum(axis=0)).ravel()
                                      >= int(parameters.get("min_cells", 10)))
            within = np.searchsorted(detected, columns)
            if (within >= len(detected)).any() or not np.array_equal(
                    detected[np.minimum(within, len(detected) - 1)], columns):
                raise InputError(f"modality '{name}' no longer holds the counts SpaMI trained on: train again "
                                 f"({option('retrain', True)})")
            scale = lambda matrix: log_normalised(matrix[:, detected])[:, within]  # noqa: E731
            scale_name = (f"log1p of counts per 10,000 over the genes detected in at least "
                          f"{int(parameters.get('min_cells', 10))} spots (SpaMI's RNA scale)")
        else:
            scale = lambda matrix: _pp.clr(matrix[:, columns])  # noqa: E731
            scale_name = "CLR of the protein counts (SpaMI's form)"
        return Denoised(values=holder.obsm[key], columns=None, features=part.var.iloc[columns], counts=counts,
                        feature_columns=columns, scale=scale, scale_name=scale_name, holder=holder, modality=name,
                        spatial_uns=part.uns.get("spatial", {}))


class Baseline(_Omics):
    """A floor to compare every model against: per modality, PCA of SpaMI's preprocessed features (RNA:
    log-normalised HVGs; protein: CLR; ATAC: its LSI as is), each block divided by the square root of its total
    variance so that every modality weighs the same, concatenated, then averaged over each spot and its nearest
    spots (``smoothing_spots`` in all). No training."""

    name = "baseline"
    title = "Baseline"
    config_class = BaselineConfig
    trains = False
    cluster_auto = "kmeans"  # a Gaussian mixture degenerates on its smoothed, nearly collinear components

    def inputs(self, data, config: BaselineConfig, run: RunConfig, timer) -> OmicsInputs:
        return self.paired(data, config, run, timer)

    def train(self, inputs: OmicsInputs, config: BaselineConfig, run: RunConfig, device) -> np.ndarray:
        blocks = []
        for feature in inputs.features:
            scores = feature.x if feature.kind != "adt" else _pp.principal_components(
                feature.x, config.n_pcs, random_state=run.random_state)[0]
            scores = scores - scores.mean(axis=0)
            blocks.append(scores / np.sqrt(max(float((scores ** 2).sum(axis=1).mean()), 1e-12)))
        joined = np.hstack(blocks)
        n_smooth = min(config.smoothing_spots, len(inputs.pair.spot_names))
        if n_smooth > 1:
            neighbours = _graph.nearest_other_spots(inputs.pair.coordinates, n_smooth - 1)
            joined = (joined + joined[neighbours].sum(axis=1)) / n_smooth
        return joined

    def store(self, container, inputs: OmicsInputs, result: np.ndarray, config, run: RunConfig) -> dict:
        store_rows(container, self.embedding_key(run), result, inputs.rows)
        _store_coordinates(container, inputs.pair, inputs.rows)
        return inputs.record()


def result_container(data):
    """Where multi-omics results go: the MuData or AnnData given, or a new MuData built from a dict."""
    if isinstance(data, ad.AnnData) or not isinstance(data, dict):
        return data
    import mudata

    # The modalities' own obs columns stay in the modalities (mudata's coming default), copied nowhere.
    with mudata.set_options(pull_on_update=False):
        return mudata.MuData(dict(data))


def _store_coordinates(container, pair, rows) -> None:
    """The section's coordinates on the container; spots left out (not in every modality, or without counts)
    keep the position their own modality gives them, so they are still drawn and written."""
    if "spatial" in container.obsm:
        return
    store_rows(container, "spatial", pair.coordinates, rows)
    values = np.array(container.obsm["spatial"], dtype=np.float64)
    for modality in getattr(container, "mod", {}).values():
        missing = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if not len(missing) or "spatial" not in modality.obsm:
            continue
        where = modality.obs_names.get_indexer(container.obs_names[missing])
        found = where >= 0
        values[missing[found]] = np.asarray(modality.obsm["spatial"], dtype=np.float64)[where[found], :2]
    container.obsm["spatial"] = values
