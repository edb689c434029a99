"""Paired omics measured on the same spots (RNA + protein, RNA + ATAC): matching spots by name across
modalities, telling what each modality holds, and checking their coordinates agree.

Input is a MuData (scverse's container for multimodal data), a mapping of modality name → AnnData, or one
AnnData (a single modality). Nothing given is modified here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import io as _io
from .errors import InputError
from .pp import OMICS_KINDS

logger = logging.getLogger("spatialdomains")

#: Paired modalities must share at least this fraction of the smaller modality's spots.
MIN_SHARED_FRACTION = 0.5


@dataclass
class PairedOmics:
    """Modalities restricted to the spots they share, in one order.

    ``spot_names`` are the spots used (present in every modality, with counts in every modality);
    ``counts[m]`` is modality m's raw matrix on those spots (CSR, float32) with ``feature_names[m]``.
    """

    names: list[str]
    kinds: list[str]
    counts: list[sp.csr_matrix]
    feature_names: list[pd.Index]
    coordinates: np.ndarray
    spot_names: pd.Index
    n_unmatched: int
    n_empty: int


def modality_mapping(data) -> dict[str, ad.AnnData]:
    """Modality name → AnnData for a MuData, a mapping, or a single AnnData (named after its kind)."""
    if isinstance(data, ad.AnnData):
        return {infer_kind("", data, allow_unknown=True) or "rna": data}
    if isinstance(data, Mapping):
        mapping = dict(data)
    elif hasattr(data, "mod"):
        mapping = dict(data.mod)
    else:
        raise InputError(f"expected a MuData, a dict of modality name → AnnData, or an AnnData; got "
                         f"{type(data).__name__}")
    if not mapping:
        raise InputError("no modalities given: pass e.g. {'rna': rna_adata, 'adt': adt_adata}")
    for name, value in mapping.items():
        if not isinstance(value, ad.AnnData):
            raise InputError(f"modality '{name}' is a {type(value).__name__}, not an AnnData")
    return {str(name): value for name, value in mapping.items()}


def obs_tables(data) -> list[pd.DataFrame]:
    """The ``obs`` tables of one section: a MuData's own and then each modality's, a dict's values, or one AnnData's."""
    parts = list(data.values()) if isinstance(data, Mapping) else [data]
    return [table for part in parts for table in [part.obs, *(m.obs for m in getattr(part, "mod", {}).values())]]


def obs_column(data, key: str, obs_names: pd.Index) -> pd.Series | None:
    """Column ``key`` for the spots ``obs_names``, from the first of :func:`obs_tables` that has it (None if none)."""
    for table in obs_tables(data):
        if key in table:
            return table[key].reindex(obs_names)
    return None


def infer_kind(name: str, adata: ad.AnnData, *, allow_unknown: bool = False) -> str | None:
    """'rna', 'adt' or 'atac' from the modality's name, else from the majority of ``var['feature_types']``."""
    lowered = name.strip().lower()
    for kind, clues in OMICS_KINDS.items():
        if lowered in clues["names"]:
            return kind
    if "feature_types" in adata.var:
        common = adata.var["feature_types"].astype(str).value_counts().index[0]
        for kind, clues in OMICS_KINDS.items():
            if common in clues["feature_types"]:
                return kind
    if allow_unknown:
        return None
    raise InputError(f"cannot tell what modality '{name}' holds: name it 'rna', 'adt' or 'atac', or pass "
                     f"modality_kinds={{'{name}': 'rna' | 'adt' | 'atac'}}")


def pair_modalities(data, *, modality_kinds: Mapping[str, str] | None = None, layers: Mapping[str, str] | None = None,
                    spatial_key: str = "spatial") -> PairedOmics:
    """Match the modalities' spots by name and validate them.

    Spots are taken in the order of the first modality that holds coordinates (RNA when present); spots missing
    from a modality are left out (logged), and too small an overlap is an error. Coordinates come from a MuData's
    own ``obsm[spatial_key]`` when it has one, else from that first modality, and must agree with every other
    modality that has them. Each modality must hold raw counts (``X``, or ``layers[name]``); spots with no
    counts in some modality are left out (logged).
    """
    mapping = modality_mapping(data)
    kinds_given = dict(modality_kinds or {})
    unknown = set(kinds_given) - set(mapping)
    if unknown:
        raise InputError(f"modality_kinds names {sorted(unknown)}, which are not modalities "
                         f"(modalities: {', '.join(mapping)})")
    kinds = {}
    for name, adata in mapping.items():
        kind = kinds_given.get(name) or infer_kind(name, adata)
        if kind not in OMICS_KINDS:
            raise InputError(f"modality_kinds['{name}'] = '{kind}': use one of {', '.join(OMICS_KINDS)}")
        kinds[name] = kind
    if len(mapping) > 2:
        raise InputError(f"{len(mapping)} modalities given ({', '.join(mapping)}); SpaMI pairs at most two")
    for name, adata in mapping.items():
        _io._check_unique_names(adata.obs_names, f"modality '{name}': obs_names (spot barcodes)",
                                f"mdata['{name}'].obs_names_make_unique()")

    names = sorted(mapping, key=lambda m: (spatial_key not in mapping[m].obsm, kinds[m] != "rna"))
    shared = mapping[names[0]].obs_names
    for name in names[1:]:
        other = mapping[name].obs_names
        common = shared[shared.isin(other)]
        smaller = min(len(shared), len(other))
        if len(common) < MIN_SHARED_FRACTION * smaller:
            raise InputError(
                f"modalities '{names[0]}' and '{name}' share only {len(common)} spot names ({len(shared)} and "
                f"{len(other)} spots; e.g. '{shared[0]}' vs '{other[0]}'): paired omics must use the same barcodes; "
                "strip any modality prefix or suffix so that the names match")
        shared = common
    n_unmatched = max(len(mapping[name].obs_names) for name in names) - len(shared)
    if n_unmatched:
        logger.warning("%d spots are not in every modality and are left out (%d shared)", n_unmatched, len(shared))

    coordinates = _shared_coordinates(data, mapping, names, shared, spatial_key)
    counts, feature_names, has_counts = [], [], np.ones(len(shared), dtype=bool)
    for name in names:
        adata = mapping[name]
        matrix = _raw_counts(adata, name, kinds[name], (layers or {}).get(name))
        rows = adata.obs_names.get_indexer(shared)
        matrix = sp.csr_matrix(matrix, dtype=np.float32)[rows]
        has_counts &= np.asarray(matrix.sum(axis=1)).ravel() > 0
        counts.append(matrix)
        feature_names.append(adata.var_names)
    n_empty = int((~has_counts).sum())
    if n_empty:
        logger.warning("leaving out %d spots with no counts in some modality", n_empty)
    if has_counts.sum() < 10:
        raise InputError(f"only {int(has_counts.sum())} spots have counts in every modality; at least 10 are needed")
    return PairedOmics(names=names, kinds=[kinds[m] for m in names], counts=[c[has_counts] for c in counts],
                       feature_names=feature_names, coordinates=coordinates[has_counts],
                       spot_names=shared[has_counts], n_unmatched=n_unmatched, n_empty=n_empty)


def _shared_coordinates(data, mapping, names, shared, spatial_key) -> np.ndarray:
    """(x, y) of the shared spots; every modality that has coordinates must agree with them."""
    own = getattr(data, "obsm", None) if not isinstance(data, (ad.AnnData, Mapping)) else None
    if own is not None and spatial_key in own:
        source, where = data, "the MuData"
    elif spatial_key in mapping[names[0]].obsm:
        source, where = mapping[names[0]], f"modality '{names[0]}'"
    else:
        raise InputError(f"no modality has obsm['{spatial_key}']: store the spot coordinates (x, y) there, e.g. "
                         f"mdata['rna'].obsm['{spatial_key}'] = xy")
    coordinates = _io.spatial_coordinates(source, spatial_key)[source.obs_names.get_indexer(shared)]
    scale = max(float(np.ptp(coordinates, axis=0).max()), 1e-12)
    for name in names:
        adata = mapping[name]
        if adata is source or spatial_key not in adata.obsm:
            continue
        theirs = _io.spatial_coordinates(adata, spatial_key)[adata.obs_names.get_indexer(shared)]
        gap = np.abs(theirs - coordinates).max(axis=1)
        bad = gap > 1e-4 * scale
        if bad.any():
            raise InputError(
                f"modality '{name}' places {int(bad.sum())} spots elsewhere than {where} (e.g. spot "
                f"'{shared[bad][0]}': {theirs[bad][0].tolist()} vs {coordinates[bad][0].tolist()}): the modalities "
                f"must come from the same section; fix obsm['{spatial_key}'] or drop it from one modality")
    return coordinates


def _raw_counts(adata: ad.AnnData, name: str, kind: str, layer: str | None):
    """The modality's matrix after checking it holds non-negative (and, except ATAC, integer) counts."""
    matrix = _io._expression(adata, layer)
    where = f"modality '{name}': " + (f"layers['{layer}']" if layer else "X")
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{where} contains NaN or infinite values: remove or fix those entries")
    if values.size and values.min() < 0:
        raise InputError(f"{where} contains negative values: raw counts are required (pass the count layer)")
    if kind != "atac" and values.size and not np.all(values == np.round(values)):
        raise InputError(f"{where} contains non-integer values, so it looks normalised; SpaMI preprocesses raw "
                         f"counts itself: pass the raw counts (e.g. layers={{'{name}': 'counts'}})")
    return matrix
