"""Small shared helpers: atomic file writes, provenance (versions, timings) and h5ad-safe metadata."""
from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

logger = logging.getLogger("spatialdomains")

_TRACKED_PACKAGES = (
    "spatialdomains", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn",
    "torch", "torch_geometric", "rpy2",
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    Readers never see a half-written file, and a failure leaves any previous file untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp's 0600 would hide reports and tables from other users
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def running_inside_r() -> bool:
    """True when this Python was started by R's reticulate (its helper modules are loaded)."""
    return "rpycall" in sys.modules


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape results (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


class Timer:
    """Collects named wall-clock durations in seconds: ``with timer("train"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Progress:
    """Progress of a loop of known length: a bar on a terminal; elsewhere (R's console, a log file), where a bar
    cannot redraw itself, a plain line on stderr at every tenth of the way, with the time left.

    ``Progress("STAIG", 400, unit="epochs")`` then ``update(loss=...)`` once per step, and ``close()``.
    """

    def __init__(self, description: str, total: int, *, unit: str = "steps", enabled: bool = True,
                 initial: int = 0) -> None:
        if sys.stderr is sys.__stderr__:  # a terminal or a log file: the plain bar
            from tqdm import tqdm
        else:  # a notebook's stream (a widget there when ipywidgets is installed)
            from tqdm.auto import tqdm

        self.description, self.total, self.unit, self.done = description, total, unit, initial
        # disable=None: tqdm draws only when stderr is a terminal
        self.bar = tqdm(total=total, initial=initial, desc=description, disable=None if enabled else True,
                        leave=False)
        self.lines = enabled and self.bar.disable
        self.every = max(1, -(-total // 10))
        self.started, self.initial = time.perf_counter(), initial

    def update(self, n: int = 1, *, loss: float | None = None) -> None:
        before, self.done = self.done, self.done + n
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(n)
        if self.lines and (self.done // self.every > before // self.every or self.done == self.total):
            elapsed = time.perf_counter() - self.started
            left = elapsed / max(1, self.done - self.initial) * (self.total - self.done)
            shown = "" if loss is None else f", loss {loss:.4f}"
            print(f"{self.description}: {self.done}/{self.total} {self.unit}{shown}, {elapsed:.0f} s elapsed, "
                  f"about {left:.0f} s left", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_steps(iterable, description: str, *, total: int | None = None, unit: str = "steps", enabled: bool = True):
    """Yield from ``iterable`` with a :class:`Progress` (one step per item)."""
    items = iterable if total is not None else list(iterable)
    with Progress(description, len(items) if total is None else total, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


def h5ad_safe(value):
    """Convert a provenance record to types AnnData can write: drop None, stringify unknown objects."""
    if isinstance(value, Mapping):
        return {str(k): h5ad_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        items = [h5ad_safe(v) for v in value if v is not None]
        if items and all(isinstance(v, (int, float, np.integer, np.floating, bool)) for v in items):
            return np.asarray(items)
        return [str(v) for v in items]
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.ndarray)):
        return value
    return str(value)


def json_safe(value):
    """Convert a provenance record (possibly read back from h5ad) to plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


@contextlib.contextmanager
def step_messages(shown: bool):
    """The package's step messages (image features, training, clustering) on stderr for the duration of the
    call; the logger is left as it was afterwards."""
    if not shown:
        yield
        return
    package_logger = logging.getLogger("spatialdomains")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    level, propagate = package_logger.level, package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False  # a handler the R user set up on the root logger would print it twice
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
        package_logger.propagate = propagate


@contextlib.contextmanager
def to_terminal(shown: bool):
    """Within the block, when ``shown``: stderr is the process's own (in the report's kernel, the terminal that asked
    for the report rather than the page) and the package's step messages are printed there."""
    if not shown:
        yield
        return
    previous, sys.stderr = sys.stderr, sys.__stderr__
    try:
        with step_messages(True), warnings.catch_warnings():
            # umap-learn imports tqdm.auto, which in a notebook kernel asks for Jupyter widgets a terminal never uses
            warnings.filterwarnings("ignore", message="IProgress not found")
            yield
    finally:
        sys.stderr = previous


def prefer_own_libpython() -> None:
    """Let Python subprocesses find this Python's own shared library first.

    Once R has started in this process (rpy2, or reticulate inside R), ``LD_LIBRARY_PATH`` lists the system
    library folders, where another build's libpython may live; a Python subprocess (a report's kernel, a batch's
    worker) loading it fails on its first extension module. Putting this Python's library folder first is harmless
    otherwise, so it is done once and left; the package calls it whenever it starts R.
    """
    import sysconfig

    library = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH")
    if not current or not sysconfig.get_config_var("Py_ENABLE_SHARED") or not library:
        return
    if current.split(os.pathsep)[0] != library:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([library, current])
