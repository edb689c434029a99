"""The methods, one module each, and their registry. Adding a method: a module with its config dataclass and
a :class:`~spatialdomains.methods.base.Method` subclass, then :func:`register` it here."""
from __future__ import annotations

from ..errors import InputError
from .base import Method, RunConfig
from .spami import BaselineConfig, SpamiConfig
from .spotscape import SpotscapeConfig
from .staig import StaigConfig

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` available by its name to every door (Python, command line, R, report)."""
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise InputError(f"method must be one of {', '.join(_REGISTRY)}, got '{name}'")
    return _REGISTRY[name]


def names(kind: str | None = None) -> list[str]:
    """Registered method names, optionally of one kind ('expression' or 'omics')."""
    return [name for name, method in _REGISTRY.items() if kind is None or method.kind == kind]


def _register_builtin() -> None:
    from .spami import Baseline, Spami
    from .spotscape import Spotscape
    from .staig import Staig

    for method in (Staig(), Spotscape(), Spami(), Baseline()):
        register(method)


_register_builtin()

__all__ = ["Method", "RunConfig", "StaigConfig", "SpotscapeConfig", "SpamiConfig", "BaselineConfig", "register",
           "get", "names"]
