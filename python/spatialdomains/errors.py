"""Exceptions a user can act on, and how a message names an option in the interface in use.

A message tells the user what to change in the words they typed: ``layer='counts'`` in Python,
``--layer counts`` on the command line, ``layer = "counts"`` in R. Each door sets its interface with
:func:`interface`; messages spell options with :func:`option`.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_INTERFACE = contextvars.ContextVar("spatialdomains_interface", default="python")
_UNSET = object()
#: Options whose command-line flag is not the option's name with dashes.
_FLAGS = {"n_epochs": "--epochs", "random_state": "--seed", "use_image": "--image", "inputs": "INPUT",
          "modalities": "--modality"}
#: Options the command line sets through other flags: how to write them there, whatever the value.
_CLI_SPELLING = {"image_options": "--image FILE --image-scale S (and --backbone, --backbone-weights)"}
#: Options whose samplesheet column is not the Python name.
_COLUMNS = {"n_epochs": "epochs", "random_state": "seed", "inputs": "input", "modalities": "modality_NAME"}
#: Options whose R argument is not the Python name.
_R_ARGUMENTS = {"random_state": "seed", "out": "file", "layer": "assay", "library_size_key": "library_size"}


@contextlib.contextmanager
def interface(name: str) -> Iterator[None]:
    """Messages raised inside the block speak the words of ``name``: 'python', 'cli', 'r' or 'samplesheet'."""
    token = _INTERFACE.set(name)
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def current_interface() -> str:
    """The interface whose words messages use now ('python', 'cli', 'r' or 'samplesheet')."""
    return _INTERFACE.get()


def option(name: str, value=_UNSET) -> str:
    """Option ``name`` (set to ``value``) as the user writes it in the interface in use."""
    where = _INTERFACE.get()
    if where == "cli":
        if name in _CLI_SPELLING:
            return _CLI_SPELLING[name]
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        if value is _UNSET or value is True:
            return flag
        if value is False or value is None:
            return f"without {flag}"
        return f"{flag} {value}"
    if where == "samplesheet":
        column = _COLUMNS.get(name, name)
        if value is _UNSET:
            return column
        return f"{column} '{({True: 'yes', False: 'no'}.get(value, value) if isinstance(value, bool) else value)}'"
    if where == "r":
        name = _R_ARGUMENTS.get(name, name)
        return name if value is _UNSET else f"{name} = {_r_value(value)}"
    return name if value is _UNSET else f"{name}={value!r}"


def _r_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "TRUE", False: "FALSE", None: "NULL"}[value]
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "list(" + ", ".join(f"{k} = {_r_value(v)}" for k, v in value.items()) + ")"
    return str(value)


class InputError(ValueError):
    """Bad input: the message names the field that is wrong and how to fix it."""


class BackendUnavailable(RuntimeError):
    """An optional backend (R, mclust, rpy2) is missing: the message names what to install or the fallback."""


class ReportFailed(RuntimeError):
    """A report's notebook failed: the message carries the notebook's own error."""


class OutputFailed(RuntimeError):
    """Results could not be written (disk full, read-only, no permission); the destination was left as it was.

    After a failed HDF5 write h5py may crash the interpreter when it shuts down, so the command line ends the
    process directly once it has printed this message.
    """


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C or SIGTERM); ``signal_number`` says which."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
