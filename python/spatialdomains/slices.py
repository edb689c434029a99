"""Several slices in one analysis: combining a list of AnnData, ordering spots by slice, and handing results
back to each slice. Coordinates are never aligned or shifted; each slice keeps its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .errors import InputError

#: obs column that names each spot's slice when a list of AnnData is combined.
DEFAULT_BATCH_KEY = "slice"


@dataclass
class SliceLayout:
    """Spots grouped by slice: ``order`` sorts spots so each slice is contiguous (stable, slices in order of
    first appearance); ``bounds`` are the (start, end) rows of each slice in that order."""

    names: list[str]
    codes: np.ndarray
    order: np.ndarray
    bounds: list[tuple[int, int]]

    @property
    def n_slices(self) -> int:
        return len(self.names)


def slice_layout(labels) -> SliceLayout:
    """Group spots by their slice label (any hashable values; missing values are refused)."""
    labels = pd.Series(np.asarray(labels, dtype=object))
    if labels.isna().any():
        raise InputError(f"{int(labels.isna().sum())} spots have no slice label: fill the batch_key column")
    names = [str(name) for name in pd.unique(labels)]
    codes = pd.Categorical(labels.astype(str), categories=names).codes.astype(np.int64)
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(names)))
    bounds = [(int(end - size), int(end)) for end, size in zip(ends, np.bincount(codes, minlength=len(names)))]
    return SliceLayout(names=names, codes=codes, order=order, bounds=bounds)


def batch_labels(adata: ad.AnnData, batch_key: str) -> pd.Series:
    """The slice column ``obs[batch_key]``, with an error naming the columns there are."""
    if batch_key not in adata.obs:
        raise InputError(f"batch_key: obs['{batch_key}'] does not exist (obs columns: {', '.join(adata.obs)}); "
                         "name the column that says which slice each spot belongs to")
    return adata.obs[batch_key]


def as_list(slices) -> list:
    """The slices of a list, tuple or dict of AnnData, in order."""
    return list(slices.values()) if isinstance(slices, dict) else list(slices)


def slice_names_of(slices) -> list[str]:
    """The names of the slices: a dict's keys, else slice1, slice2, ..."""
    return [str(k) for k in slices] if isinstance(slices, dict) else [f"slice{i + 1}" for i in range(len(slices))]


def check_combinable(slices, batch_key: str = DEFAULT_BATCH_KEY) -> None:
    """Everything :func:`combine` needs, checked without copying anything (so before any long work)."""
    names, slices = slice_names_of(slices), as_list(slices)
    if len(slices) < 1 or not all(isinstance(a, ad.AnnData) for a in slices):
        raise InputError("expected a list of AnnData objects (one per slice) or a dict of them")
    if len(set(names)) != len(names):
        raise InputError(f"need one distinct name per slice, got {names}")
    for name, adata in zip(names, slices):
        if "spatial" not in adata.obsm:
            raise InputError(f"slice {name} has no obsm['spatial'] coordinates")
        if batch_key in adata.obs:
            raise InputError(f"slice {name} already has an obs column '{batch_key}': choose another batch_key")
    shared = slices[0].var_names
    for adata in slices[1:]:
        shared = shared.intersection(adata.var_names)
    if len(shared) == 0:
        raise InputError("the slices have no gene in common: check that they use the same gene identifiers "
                         "(all Ensembl IDs or all symbols)")


def combine(slices, batch_key: str = DEFAULT_BATCH_KEY) -> ad.AnnData:
    """One AnnData from several: genes present in every slice, ``obs[batch_key]`` naming the slice, spot names
    made unique by appending the slice name. ``slices`` is a list of AnnData or a dict name → AnnData.

    The inputs are not modified. Each keeps its own ``obsm['spatial']``.
    """
    check_combinable(slices, batch_key)
    names = slice_names_of(slices)
    combined = ad.concat(as_list(slices), join="inner", label=batch_key, keys=names, index_unique="-",
                         merge="same")
    combined.obs[batch_key] = pd.Categorical(combined.obs[batch_key].astype(str), categories=names)
    return combined


def hand_back(combined: ad.AnnData, slices, batch_key: str, *, obsm_keys=(), obs_keys=(),
              uns_key: str | None = None) -> None:
    """Copy per-spot results of ``combined`` (built by :func:`combine`, same slice order) into each slice.

    ``obsm_keys`` may name ``obsm`` entries or ``layers``; a layer goes to the slice's ``layers`` when the slice
    has exactly the combined genes, else to its ``obsm``. A key the combined run did not produce is removed from
    the slices, so that no result of an earlier run stays beside the new ones.
    """
    labels = combined.obs[batch_key].astype(str).to_numpy()
    names = list(combined.obs[batch_key].cat.categories)
    for name, adata in zip(names, as_list(slices)):
        rows = np.flatnonzero(labels == name)
        if len(rows) != adata.n_obs:
            raise RuntimeError(f"slice {name}: {len(rows)} combined rows for {adata.n_obs} spots")
        for key in obsm_keys:
            adata.obsm.pop(key, None)
            adata.layers.pop(key, None)
            if key in combined.obsm:
                adata.obsm[key] = np.asarray(combined.obsm[key])[rows]
            elif key in combined.layers:  # per-gene results: a layer where the genes match, else obsm
                values = np.asarray(combined.layers[key])[rows]
                target = adata.layers if adata.var_names.equals(combined.var_names) else adata.obsm
                target[key] = values
        for key in obs_keys:
            if key not in combined.obs:
                if key in adata.obs:
                    del adata.obs[key]
                continue
            adata.obs[key] = combined.obs[key].iloc[rows].to_numpy()
            if isinstance(combined.obs[key].dtype, pd.CategoricalDtype):
                adata.obs[key] = pd.Categorical(adata.obs[key], categories=combined.obs[key].cat.categories)
        if uns_key is not None and uns_key in combined.uns:
            adata.uns[uns_key] = {**adata.uns.get(uns_key, {}), **combined.uns[uns_key], "slice": name}


def split(adata: ad.AnnData, batch_key: str) -> list[tuple[str, ad.AnnData]]:
    """(slice name, its spots as a view) for each slice of a combined AnnData, in the order of its categories."""
    labels = adata.obs[batch_key].astype("category")
    return [(str(name), adata[(labels == name).to_numpy()]) for name in labels.cat.categories]


def slice_names(paths: list[str]) -> list[str]:
    """Slice names from the input paths (file name without extension; for a folder inside a 10x run, such as
    ``outs/`` or a Visium HD bin folder, the run's name), made unique when they repeat."""
    from ._tenx import run_name

    stems = [run_name(Path(path)).split(".")[0] or f"slice{i + 1}" for i, path in enumerate(paths)]
    return [stem if stems.count(stem) == 1 else f"{stem}_{i + 1}" for i, stem in enumerate(stems)]
