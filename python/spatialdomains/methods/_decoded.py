"""A decoder's output as the methods that have one hand it over: where the denoised values lie in a trained object,
which features they cover, and how observed counts are put on the same scale (used by :func:`spatialdomains.tl.impute`
and :func:`spatialdomains.tl.evaluate_imputation`, the same for every method)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError, option


@dataclass
class Denoised:
    """One modality's decoder output on the rows of the object holding it, and how observed counts are put on the
    same scale (``scale(counts)``: the modality's counts, all features, in those rows → spots × ``features``)."""

    values: object  # spots × features (NaN rows for spots the model left out); an array or a genes-wide layer
    columns: np.ndarray | None  # the features' columns in ``values`` when it is a layer over all genes, else None
    features: pd.DataFrame  # var of the features decoded
    counts: sp.csr_matrix  # the modality's raw counts on the same rows, every feature
    feature_columns: np.ndarray  # the decoded features' columns in ``counts``
    scale: Callable[[sp.csr_matrix], object]
    scale_name: str
    holder: ad.AnnData  # where obs, obsm and the image come from
    modality: str
    spatial_uns: dict  # the image record of the modality, when the holder has none

    def at(self, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The decoded values at (row, feature index) pairs, without a dense copy of the whole matrix."""
        columns = features if self.columns is None else self.columns[features]
        return np.asarray(self.values[rows, columns], dtype=np.float64).ravel()

    def dense(self) -> np.ndarray:
        values = self.values if self.columns is None else self.values[:, self.columns]
        return np.array(values.toarray() if sp.issparse(values) else values, dtype=np.float32)

    def only(self, genes) -> "Denoised":
        """The same source restricted to the features named, in that order."""
        asked = [str(gene) for gene in np.atleast_1d(genes)]
        where = self.features.index.get_indexer(asked)
        if not asked or (where < 0).any():
            missing = [gene for gene, w in zip(asked, where) if w < 0]
            raise InputError(f"{option('genes')}: {', '.join(missing[:5]) or 'none given'} not among the "
                             f"{len(self.features)} features the model decoded (e.g. "
                             f"{', '.join(map(str, self.features.index[:3]))})")
        full_scale = self.scale
        return dataclasses.replace(
            self, columns=where if self.columns is None else self.columns[where], features=self.features.iloc[where],
            feature_columns=self.feature_columns[where], scale=lambda counts: full_scale(counts)[:, where])


def log_normalised(counts: sp.csr_matrix) -> sp.csr_matrix:
    """log1p of counts per 10,000 over the columns given; spots without counts stay 0."""
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    values = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ counts)
    values.data = np.log1p(values.data)
    return values


def rows_to(counts: sp.csr_matrix, names: pd.Index, target: pd.Index) -> sp.csr_matrix:
    """``counts`` (rows named ``names``) in the row order of ``target``; rows not in ``names`` are empty."""
    where = pd.Index(names).get_indexer(target)
    if np.array_equal(where, np.arange(len(names))):
        return counts
    found = np.flatnonzero(where >= 0)
    selector = sp.csr_matrix((np.ones(len(found), dtype=np.float32), (found, where[found])),
                             shape=(len(target), counts.shape[0]))
    return sp.csr_matrix(selector @ counts)


def raw_counts(adata: ad.AnnData, layer: str | None) -> sp.csr_matrix:
    """The counts a method trained on (``layers[layer]`` or ``X``), as float32 CSR."""
    return sp.csr_matrix(adata.layers[layer] if layer else adata.X, dtype=np.float32)
