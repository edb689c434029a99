"""A toy method for the tests of the method registry: a new method is this one module, registered by name (or
declared as a ``spatialdomains.methods`` entry point) with no other file edited, and every door takes it.

It smooths the log-normalised expression of the most expressed genes over each spot's nearest spots (its
"decoder" output), and its embedding is the smoothed values' principal components. It has a preset, a decoder,
and k-means as its own clusterer.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from spatialdomains.methods import Method
from spatialdomains.methods._decoded import Denoised, log_normalised, raw_counts

DENOISED_KEY = "toy_denoised"


@dataclass(frozen=True)
class ToyConfig:
    n_neighbors: int = 6
    n_components: int = 8
    n_genes: int = 60


class Toy(Method):
    name = "toy"
    title = "Toy"
    config_class = ToyConfig
    trains = False
    decodes = True
    cluster_auto = "kmeans"

    def preset_names(self) -> tuple[str, ...]:
        return ("default", "wide")

    def presets(self, data, overrides: dict) -> dict[str, dict]:
        return {"default": {}, "wide": {"n_neighbors": 12}}

    def inputs(self, adata, config: ToyConfig, run, timer):
        return SimpleNamespace(config=config, counts=raw_counts(adata, None),
                               coordinates=np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2])

    def train(self, inputs, config: ToyConfig, run, device):
        from sklearn.neighbors import NearestNeighbors

        expression = log_normalised(inputs.counts)
        genes = np.sort(np.argsort(-np.asarray(expression.mean(axis=0)).ravel())[:config.n_genes])
        _, nearest = NearestNeighbors(n_neighbors=config.n_neighbors).fit(inputs.coordinates).kneighbors(
            inputs.coordinates)
        smoothed = expression[:, genes].toarray()[nearest].mean(axis=1)
        centred = smoothed - smoothed.mean(axis=0)
        left, singular, _ = np.linalg.svd(centred, full_matrices=False)
        return SimpleNamespace(embedding=left[:, :config.n_components] * singular[:config.n_components],
                               denoised=smoothed.astype(np.float32), genes=genes)

    def store(self, adata, inputs, result, config: ToyConfig, run) -> dict:
        adata.obsm[self.embedding_key(run)] = result.embedding
        adata.obsm[DENOISED_KEY] = result.denoised
        return {"genes": np.asarray(adata.var_names[result.genes], dtype=str)}

    def has_denoised(self, holder) -> bool:
        return DENOISED_KEY in holder.obsm

    def denoised(self, holder, modality):
        columns = holder.var_names.get_indexer(np.asarray(holder.uns["spatialdomains"][self.name]["genes"], dtype=str))
        return Denoised(values=holder.obsm[DENOISED_KEY], columns=None, features=holder.var.iloc[columns],
                        counts=raw_counts(holder, None), feature_columns=columns,
                        scale=lambda counts: log_normalised(counts)[:, columns],
                        scale_name="log1p of counts per 10,000", holder=holder, modality="rna", spatial_uns={})
