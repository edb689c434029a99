"""What the gene-expression methods (STAIG, Spotscape) share: the checked input in slice order, and writing
per-spot results back in the input's order."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import io as _io
from .. import slices as _slices
from ..errors import InputError


@dataclass
class ExpressionInputs:
    """A method's training inputs, rows in slice order (``layout.order``), and what maps them back."""

    config: object
    checked: _io.CheckedInput
    layout: _slices.SliceLayout
    features: np.ndarray | None = None
    genes: np.ndarray | None = None
    adjacency: sp.csr_matrix | None = None
    space: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def several_slices(self) -> bool:
        return self.layout.n_slices > 1

    def settle(self, name: str, one_slice, several):
        """A setting left None takes its one-slice or several-slice default; the config (as recorded) says
        which. Returns the config."""
        if getattr(self.config, name) is None:
            self.config = dataclasses.replace(self.config, **{name: several if self.several_slices else one_slice})
        return self.config

    @property
    def coordinates(self) -> np.ndarray:
        """Coordinates of the spots used, in slice order."""
        return self.checked.coordinates[self.layout.order]

    @property
    def slice_codes(self) -> np.ndarray:
        return self.layout.codes[self.layout.order]

    def counts_in_order(self) -> sp.csr_matrix:
        return self.checked.counts[self.layout.order]

    def to_input_rows(self, values: np.ndarray) -> np.ndarray:
        """Rows in slice order → one row per spot of the input (NaN for spots left out)."""
        restored = np.empty_like(values)
        restored[self.layout.order] = values
        full = np.full((len(self.checked.spots), values.shape[1]), np.nan, dtype=np.float32)
        full[self.checked.spots] = restored
        return full

    def record(self, batch_key: str | None) -> dict:
        """The part of the record every expression method shares."""
        record = {"n_spots_used": int(self.checked.spots.sum()),
                  "n_spots_left_out": int((~self.checked.spots).sum()),
                  "genes": np.asarray(self.checked.gene_names[self.genes], dtype=str),
                  "coordinates": self.space}
        if batch_key is not None:
            record.update(batch_key=batch_key, slices=np.asarray(self.layout.names, dtype=str),
                          n_spots_per_slice=np.asarray([end - start for start, end in self.layout.bounds]))
        return record


def checked_inputs(adata: ad.AnnData, config, batch_key: str | None, n_neighbors: int) -> ExpressionInputs:
    """Validate counts and coordinates and group the spots used by slice."""
    checked = _io.check_input(adata, layer=config.layer, n_neighbors=n_neighbors)
    if batch_key is None:
        layout = _slices.slice_layout(np.zeros(int(checked.spots.sum()), dtype=int))
    else:
        layout = _slices.slice_layout(_slices.batch_labels(adata, batch_key).to_numpy()[checked.spots])
    inputs = ExpressionInputs(config=config, checked=checked, layout=layout)
    ordered = inputs.coordinates
    for name, (start, end) in zip(layout.names, layout.bounds):
        _io.check_positions(ordered[start:end], name if layout.n_slices > 1 else "")
    inputs.space = _io.spatial_scale(adata, ordered, inputs.slice_codes)
    return inputs


def library_size(adata: ad.AnnData, key: str | None, spots: np.ndarray) -> np.ndarray | None:
    """True per-spot totals from ``obs[key]`` (for inputs holding a subset of the genes), or None."""
    if key is None:
        return None
    if key not in adata.obs:
        raise InputError(f"library_size_key: obs['{key}'] does not exist (obs columns: {', '.join(adata.obs)})")
    values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=np.float64)[spots]
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"obs['{key}'] must hold a positive total count for every spot with counts")
    return values
