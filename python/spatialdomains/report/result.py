"""What a report shows of one sample: :class:`SampleResult`, made by :func:`spatialdomains.report.sample.analyse`
and drawn by :mod:`spatialdomains.report.sections`."""
from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import pandas as pd


@dataclass
class SampleResult:
    """Everything a report shows: the expression AnnData with domains, the tables, and the provenance."""

    adata: ad.AnnData
    markers: pd.DataFrame
    go: pd.DataFrame
    record: dict
    multiomics: object | None = None  # the MuData of a SpaMI/baseline run (for the attention map)
    batch_key: str | None = None
    go_error: str | None = None
    timings: dict = field(default_factory=dict)
    label_key: str | None = None  # an annotation of the spots (e.g. a pathologist's layers) to compare with
    denoised: ad.AnnData | None = None  # the decoder's values of a few marker genes (Spotscape, SpaMI)
    transfer: pd.DataFrame | None = None  # each slice's annotation predicted from another slice's
    condition_key: str | None = None  # the obs column giving each slice's condition
    conditions: object | None = None  # tl.compare_conditions' result
    request: object | None = None  # the ReportRequest that made it: the options each section draws with
