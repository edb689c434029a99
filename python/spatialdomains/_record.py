"""Writing results back: per-spot rows for every spot of the input, domain columns, provenance records."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._utils import h5ad_safe

#: ``uns`` key holding every step's provenance record.
UNS_KEY = "spatialdomains"


def record_step(target, step: str, record: dict) -> None:
    """Store ``record`` as ``uns['spatialdomains'][step]`` (in types AnnData can write)."""
    target.uns.setdefault(UNS_KEY, {})
    target.uns[UNS_KEY][step] = h5ad_safe(record)


def plain_parameters(parameters):
    """A config as a record: arrays (e.g. an image given in ``image_options``) are described, not copied."""
    if isinstance(parameters, dict):
        return {key: plain_parameters(value) for key, value in parameters.items()}
    if isinstance(parameters, np.ndarray) and parameters.ndim > 1:
        return f"array of shape {parameters.shape}"
    return parameters


def store_rows(target, key: str, values: np.ndarray, rows: np.ndarray) -> None:
    """``obsm[key]`` for every spot of ``target``: ``values`` on ``rows``, NaN elsewhere."""
    full = np.full((target.n_obs, values.shape[1]), np.nan, dtype=np.float32)
    full[rows] = values
    target.obsm[key] = full


def domain_column(labels: np.ndarray, has_embedding: np.ndarray) -> pd.Categorical:
    """Domains '1'..'K' as a categorical over all spots; spots without an embedding get none."""
    column = np.full(len(has_embedding), None, dtype=object)
    column[has_embedding] = np.asarray(labels).astype(str)
    categories = [str(k) for k in sorted(np.unique(np.asarray(labels)))]
    return pd.Categorical(column, categories=categories)
