"""The methods, one module each, and their registry.

Adding a method: a module with its config dataclass and a :class:`~spatialdomains.methods.base.Method` subclass,
then :func:`register` it, or name it in a package's ``spatialdomains.methods`` entry points (``name =
"module:Class"``), which are loaded the first time the registry is asked. Every door (Python, command line,
report, samplesheet, R) reads the methods and what they can do from here.
"""
from __future__ import annotations

import functools
import logging
import numbers
import os
from typing import Iterable, Mapping

from ..errors import InputError, option
from .base import Method, RunConfig
from .spami import BaselineConfig, SpamiConfig
from .spotscape import SpotscapeConfig
from .staig import StaigConfig

#: The entry-point group through which other packages add methods.
ENTRY_POINT_GROUP = "spatialdomains.methods"
_REGISTRY: dict[str, Method] = {}
#: The methods registered in this process with :func:`register` (the others every process finds by itself).
_SESSION: dict[str, Method] = {}
_LOADED = False
logger = logging.getLogger("spatialdomains")


def register(method: Method) -> Method:
    """Make ``method`` available by its name to every door (Python, command line, R, report).

    A report's notebook runs in a process of its own, which finds the package's methods and those installed as
    entry points by itself; a method registered here is loaded there from the file that defines its class
    (:func:`session_method`)."""
    _registry()[method.name] = method
    _SESSION[method.name] = method
    return method


def session_method(name: str) -> dict | None:
    """Where another process finds method ``name`` when it was registered in this one (None for the package's
    own and installed ones): its class's module, file and name."""
    import inspect

    method = _SESSION.get(name)
    if method is None or _registry().get(name) is not method:
        return None
    kind = type(method)
    try:
        file = inspect.getfile(kind)
    except TypeError:
        file = None
    if file is None or not os.path.isfile(file):
        raise InputError(f"method '{name}' was registered in this session from code that is in no file (a notebook "
                         "cell or the interpreter), and a report runs in a process of its own: define its class in a "
                         f"module, or install it as a '{ENTRY_POINT_GROUP}' entry point")
    return {"module": kind.__module__, "file": os.path.abspath(file), "class": kind.__qualname__}


def load_session_method(name: str, where: Mapping) -> None:
    """Register method ``name`` in this process from what :func:`session_method` said of it in another."""
    import importlib.util
    import sys

    if name in _registry():
        return
    module = sys.modules.get(where["module"])
    if module is None or getattr(module, "__file__", None) != where["file"]:
        spec = importlib.util.spec_from_file_location(where["module"], where["file"])
        module = importlib.util.module_from_spec(spec)
        sys.modules[where["module"]] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    register(functools.reduce(getattr, where["class"].split("."), module)())


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


def setting_problems(method: Method, settings: Mapping, *, extra: Iterable[str] = ("preset",)) -> list[str]:
    """What is wrong with settings given to ``method`` by name, before any work, in the words of the interface in
    use: names it does not take (``extra``: run options allowed beside its config), a preset it does not have, a
    training length below one epoch."""
    problems = []
    unknown = [name for name in settings if name not in method.option_names() | set(extra)]
    if unknown:
        problems.append(f"{', '.join(option(name) for name in unknown)} {'does' if len(unknown) == 1 else 'do'} not "
                        f"apply to {option('method', method.name)}"
                        + ("" if method.trains else ", which trains no model"))
    preset = settings.get("preset")
    if preset is not None and preset not in method.preset_names():
        problems.append(f"{option('preset', preset)} does not apply to {option('method', method.name)} (its presets: "
                        f"{', '.join(method.preset_names())})")
    epochs = settings.get("n_epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, numbers.Real)
                               or int(epochs) != epochs or epochs < 1):
        problems.append(f"{option('n_epochs', epochs)}: training needs at least 1 epoch")
    return problems


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
           "get", "names", "capabilities", "all_presets", "setting_problems", "session_method", "load_session_method",
           "ENTRY_POINT_GROUP"]
