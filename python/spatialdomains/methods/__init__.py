"""The methods, one module each, and their registry.

Adding a method: a module with its config dataclass and a :class:`~spatialdomains.methods.base.Method` subclass,
then :func:`register` it, or name it in a package's ``spatialdomains.methods`` entry points (``name =
"module:Class"``), which are loaded the first time the registry is asked. Every door (Python, command line,
report, samplesheet, R) reads the methods and what they can do from here.
"""
from __future__ import annotations

import logging

from ..errors import InputError
from .base import Method, RunConfig
from .spami import BaselineConfig, SpamiConfig
from .spotscape import SpotscapeConfig
from .staig import StaigConfig

#: The entry-point group through which other packages add methods.
ENTRY_POINT_GROUP = "spatialdomains.methods"
_REGISTRY: dict[str, Method] = {}
_LOADED = False
logger = logging.getLogger("spatialdomains")


def register(method: Method) -> Method:
    """Make ``method`` available by its name to every door (Python, command line, R, report)."""
    _registry()[method.name] = method
    return method


def get(name: str) -> Method:
    registry = _registry()
    if name not in registry:
        raise InputError(f"method must be one of {', '.join(registry)}, got '{name}'")
    return registry[name]


def names(kind: str | None = None) -> list[str]:
    """Registered method names, optionally of one kind ('expression' or 'omics')."""
    return [name for name, method in _registry().items() if kind is None or method.kind == kind]


def capabilities() -> dict[str, dict]:
    """Every method's declaration as plain values (:meth:`Method.capabilities`), by name."""
    return {name: method.capabilities() for name, method in _registry().items()}


def all_presets() -> list[str]:
    """Every preset name of any method, once each, in registry order."""
    return list(dict.fromkeys(preset for method in _registry().values() for preset in method.preset_names()))


def _registry() -> dict[str, Method]:
    if not _LOADED:
        _load_builtin_and_plugins()
    return _REGISTRY


def _load_builtin_and_plugins() -> None:
    """The package's own methods, then those other installed packages declare as entry points."""
    from importlib.metadata import entry_points

    global _LOADED
    _LOADED = True

    from .spami import Baseline, Spami
    from .spotscape import Spotscape
    from .staig import Staig

    for method in (Staig(), Spotscape(), Spami(), Baseline()):
        _REGISTRY[method.name] = method
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            method = point.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the package down
            logger.warning("method '%s' from entry point %s could not be loaded: %s", point.name, point.value, error)
            continue
        method = method() if isinstance(method, type) else method
        if not isinstance(method, Method):
            logger.warning("entry point %s names %r, not a spatialdomains Method; ignored", point.value, method)
            continue
        _REGISTRY[method.name] = method


__all__ = ["Method", "RunConfig", "StaigConfig", "SpotscapeConfig", "SpamiConfig", "BaselineConfig", "register",
           "get", "names", "capabilities", "all_presets", "ENTRY_POINT_GROUP"]
