"""The public functions of sd.tl, sd.io and sd.pl have numpydoc docstrings, so the API reference gets parameter
tables: a summary, a Parameters section naming exactly the function's parameters, and a Returns section unless
the function returns None."""
from __future__ import annotations

import inspect
import warnings

import pytest
from numpydoc import docscrape  # in the dev extra: a missing numpydoc fails here rather than skipping the checks

from spatialdomains import io, pl, tl


def _public_functions(module) -> list:
    """``__all__`` when the module has one, else the functions defined in the module whose names do not start
    with ``_`` (functions imported from elsewhere are documented where they are defined)."""
    if hasattr(module, "__all__"):
        return [getattr(module, name) for name in module.__all__ if callable(getattr(module, name))]
    return [value for name, value in vars(module).items()
            if inspect.isfunction(value) and not name.startswith("_") and value.__module__ == module.__name__]


FUNCTIONS = [(module, function) for module in (tl, io, pl) for function in _public_functions(module)]
IDS = [f"{module.__name__.rsplit('.', 1)[-1]}.{function.__name__}" for module, function in FUNCTIONS]


def _signature_names(function) -> list[str]:
    """The parameters as numpydoc writes them: ``*args`` and ``**kwargs`` keep their stars."""
    names = []
    for parameter in inspect.signature(function).parameters.values():
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        names.append(prefix + parameter.name)
    return names


def _documented_names(doc) -> list[str]:
    """The names in the Parameters section; an entry ``a, b : int`` names two, and ``\\*\\*kwargs`` (escaped for
    reST) is ``**kwargs``."""
    return [name.strip().replace("\\", "") for parameter in doc["Parameters"] for name in parameter.name.split(",")]


def _returns_none(function) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation is None or annotation == "None"  # a string under ``from __future__ import annotations``


def test_the_functions_are_collected():
    names = {f"{module.__name__}.{function.__name__}" for module, function in FUNCTIONS}
    assert {"spatialdomains.tl.staig", "spatialdomains.io.read", "spatialdomains.pl.domains"} <= names


@pytest.mark.parametrize(("module", "function"), FUNCTIONS, ids=IDS)
def test_numpydoc_docstring(module, function):
    where = f"{module.__name__}.{function.__name__}"
    assert function.__doc__, f"{where} has no docstring"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = docscrape.FunctionDoc(function)
    problems = [str(warning.message) for warning in caught]
    assert not problems, f"{where}: numpydoc cannot parse the docstring cleanly: {'; '.join(problems)}"
    assert "".join(doc["Summary"]).strip(), f"{where}: the docstring has no summary line"
    expected, documented = _signature_names(function), _documented_names(doc)
    assert documented or not expected, f"{where}: no Parameters section (expected entries for {', '.join(expected)})"
    missing = [name for name in expected if name not in documented]
    unknown = [name for name in documented if name not in expected]
    duplicated = sorted({name for name in documented if documented.count(name) > 1})
    assert not missing, f"{where}: Parameters does not document {', '.join(missing)}"
    assert not unknown, f"{where}: Parameters documents {', '.join(unknown)}, which the signature does not have"
    assert not duplicated, f"{where}: Parameters documents {', '.join(duplicated)} more than once"
    if not _returns_none(function):
        assert doc["Returns"], f"{where}: no Returns section (the function is not annotated -> None)"
