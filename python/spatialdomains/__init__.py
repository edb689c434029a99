"""spatialdomains: spatial domains from spatial transcriptomics (STAIG, Spotscape, SpaMI).

scanpy-style layout: ``sd.pp`` preprocessing, ``sd.tl`` tools (models, clustering), ``sd.pl`` plots,
``sd.io`` reading/writing, ``sd.slices`` combining slices, ``sd.datasets`` simulated example data,
``sd.metrics`` evaluation (domains and integration), ``sd.modalities`` pairing omics measured on the same spots,
``sd.analysis`` marker genes and GO enrichment, ``sd.methods`` each method's options (configs, presets) and
``sd.pipeline`` the one path every method runs. Submodules load on first use, so ``import spatialdomains`` stays
light and starts nothing.
"""
from __future__ import annotations

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version("spatialdomains")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_SUBMODULES = {"io", "pp", "tl", "pl", "graph", "datasets", "cluster", "metrics", "models", "methods", "pipeline",
               "errors", "slices", "modalities", "analysis", "report"}

__all__ = sorted(_SUBMODULES | {"find_domains", "__version__"})


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "find_domains":
        return importlib.import_module(".tl", __name__).find_domains
    raise AttributeError(f"module 'spatialdomains' has no attribute '{name}'")


def __dir__():
    return __all__
