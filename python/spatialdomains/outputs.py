"""Where results go: checked before any work, written beside the destination, moved into place only when complete.

Every door that writes results (``run``, ``demo``, ``report``, each sample of a ``batch``) goes through
:class:`Output`:

- :meth:`Output.check`, before any reading or training: the destination is not, and does not contain, one of the
  inputs; a folder that already holds something is replaced only when it holds an earlier spatialdomains result
  and ``force`` is given (never an arbitrary folder); the place is writable.
- :meth:`Output.writing`: the results are written into a hidden folder (or file) beside the destination, which is
  swapped into place as a whole only when everything was written. An error, a full disk or a signal leaves the
  destination as it was and removes the partial files.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

from ._utils import logger
from .errors import InputError, OutputFailed

#: Written last into every output folder: what made it. Only a folder holding it may be replaced (with force).
MARKER = ".spatialdomains-output.json"
#: The first bytes of every report page carry this tag, so an old report may be replaced (with force).
REPORT_TAG = b'<meta name="generator" content="spatialdomains">'
#: Errors of a full or read-only disk: the message says what to free or change rather than what failed.
_DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                errno.EFBIG: "a file grew beyond the size limit", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied"}


class Output:
    """One command's destination: a folder (``folder=True``) or a single file such as a report page.

    ``inputs`` are every path the command reads (the destination must not be or contain one); ``force``
    allows replacing an earlier spatialdomains result; ``flag`` names the destination in messages, in the words
    of the interface in use (``--out`` on the command line, ``out`` in Python).
    """

    def __init__(self, path: str | os.PathLike, *, inputs: Iterable = (), force: bool = False, flag: str = "--out",
                 folder: bool = True, force_flag: str = "--force") -> None:
        self.path = Path(path).expanduser()
        self.inputs = [Path(p).expanduser() for p in inputs if p is not None and not isinstance(p, bool)]
        self.force, self.flag, self.folder, self.force_flag = force, flag, folder, force_flag
        self._staging: Path | None = None
        self._checked = False

    def check(self) -> None:
        """Refuse, before any work, a destination that would lose the user's data or mix two runs' results."""
        self._checked = True
        target = self.path.resolve()
        named = f"{self.flag} {self.path}"
        for source in self.inputs:
            source = source.resolve()
            if source == target or target in source.parents:
                raise InputError(f"{named} {'is' if source == target else 'contains'} the input '{source}': "
                                 "writing there would replace your data; choose another output "
                                 + ("folder" if self.folder else "file"))
        if self.path.exists():
            self._check_existing(named)
        place = _existing_ancestor(self.path.parent)  # the results are staged there, then moved in
        if not place.is_dir():
            raise InputError(f"{named}: '{place}' is a file, so nothing can be written under it; choose another "
                             "path")
        if not os.access(place, os.W_OK | os.X_OK):
            reason = "is on a read-only file system" if _read_only(place) else "is not writable for you"
            raise InputError(f"{named}: '{place}' {reason}; choose an output location you can write to")

    def _check_existing(self, named: str) -> None:
        if self.folder:
            if not self.path.is_dir():
                raise InputError(f"{named} is an existing file, not a folder; give a folder name (it is created)")
            contents = [p.name for p in self.path.iterdir()]
            if not contents:
                return
            if MARKER not in contents:
                raise InputError(f"{named} already holds files that spatialdomains did not write "
                                 f"({', '.join(sorted(contents)[:4])}{', ...' if len(contents) > 4 else ''}); "
                                 "choose a new or empty folder")
            if not self.force:
                raise InputError(f"{named} already holds the results of an earlier run ({describe(self.path)}); "
                                 f"choose another folder, or add {self.force_flag} to replace them as a whole")
            return
        if self.path.is_dir():
            raise InputError(f"{named} is a folder; give the file to write, e.g. {self.path / 'report.html'}")
        if not self.force:
            raise InputError(f"{named} already exists; choose another file, or add {self.force_flag} to replace it")
        if not _is_report(self.path):
            raise InputError(f"{named} exists and is not a spatialdomains report, so it is not replaced even with "
                             f"{self.force_flag}; choose another file")

    @contextlib.contextmanager
    def writing(self, record: dict | None = None) -> Iterator[Path]:
        """Yield the staging path to write into; move it into place when the block succeeds, else remove it.

        ``record`` (what made the results) goes into the folder's marker file. A disk that is full or read-only
        is reported as :class:`OutputFailed`, saying the destination is untouched.
        """
        if not self._checked:
            self.check()
        parent = self.path.parent
        created = [folder for folder in (parent, *parent.parents) if not folder.exists()]  # deepest first
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _sweep_abandoned(parent, self.path.name)
            staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(self.path.name)}{os.getpid()}-", dir=parent))
        except OSError as error:
            raise self._failure(error) from None
        self._staging = staging
        done = False
        try:
            target = staging if self.folder else staging / self.path.name
            yield target
            if self.folder:
                _write_marker(staging, record or {})
            self._move_into_place(target)
            done = True
        except OSError as error:
            raise self._failure(error) from None
        finally:
            self.discard()
            if not done:  # a failed run leaves no folder behind that it made for its output
                for folder in created:
                    try:
                        folder.rmdir()
                    except OSError:
                        break

    def discard(self) -> None:
        """Remove the partial results (after an error or a signal); the destination is left as it was."""
        staging, self._staging = self._staging, None
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    def _move_into_place(self, target: Path) -> None:
        if self.path.exists():  # something may have appeared there during a long run: keep both, lose nothing
            try:
                self._check_existing(f"{self.flag} {self.path}")
            except InputError as error:
                kept = self.path.with_name(f"{self.path.name}.new-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(target, kept)
                raise OutputFailed(f"{error}; it changed during the run, so the results were written to {kept} "
                                   "instead") from None
        old = None
        if self.path.is_dir() and self.folder:
            if any(self.path.iterdir()):
                old = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}-{time.time_ns()}")
                os.replace(self.path, old)
            else:
                self.path.rmdir()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(target, (0o777 if self.folder else 0o666) & ~umask)  # mkdtemp's 0700 would hide results
        os.replace(target, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _failure(self, error: OSError) -> OutputFailed:
        reason = f"{_DISK_ERRORS[error.errno]} (errno {error.errno})" if error.errno in _DISK_ERRORS else _short(error)
        return OutputFailed(f"could not write the results to {self.path}: {reason}; nothing was "
                            f"written there and the partial files were removed. Free some space or choose another "
                            f"{self.flag}")


def _staging_prefix(name: str) -> str:
    """Staging folders are named after the destination, this host and the writing process."""
    return f".{name}.partial-{socket.gethostname()}-"


def _sweep_abandoned(parent: Path, name: str) -> None:
    """Remove staging folders a killed run (SIGKILL, power loss) left for this destination on this host."""
    prefix = _staging_prefix(name)
    for leftover in parent.glob(f"{glob.escape(prefix)}*"):
        pid = leftover.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(folder: Path) -> str:
    """What an output folder holds, from its marker: command, method, inputs and when."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return "written by spatialdomains"
    inputs = ", ".join(Path(p).name for p in record.get("inputs", [])) or "simulated data"
    method = f"{record['method']} on " if record.get("method") else ""
    return f"{record.get('command', 'run')}: {method}{inputs}, {record.get('created', 'unknown time')}"


def _write_marker(folder: Path, record: dict) -> None:
    entry = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), **record}
    (folder / MARKER).write_text(json.dumps(entry, indent=2, default=str) + "\n")


def _existing_ancestor(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _is_report(path: Path) -> bool:
    """An earlier report page, or an executed report notebook (papermill's record names our template)."""
    try:
        with open(path, "rb") as handle:
            if path.suffix.lower() == ".ipynb":
                content = handle.read()
                return b'"papermill"' in content and b"sample_report.ipynb" in content
            return REPORT_TAG in handle.read(4096)
    except OSError:
        return False


def _short(error: OSError) -> str:
    """The system's own words for a write error, without h5py's long trailer."""
    text = (error.strerror or str(error)).splitlines()[0].split(" (")[0].split(", errno")[0][:120]
    return f"errno {error.errno}: {text}" if error.errno else text


def free_space_warning(destination: str | os.PathLike, inputs: Iterable) -> None:
    """Warn, before any work, when the disk holding ``destination`` has less room than the inputs take
    (results are about that size)."""
    place = _existing_ancestor(Path(destination))
    needed = sum(_size(Path(p)) for p in inputs if p is not None and not isinstance(p, bool))
    free = shutil.disk_usage(place).free
    if needed and free < needed:
        logger.warning("only %.0f MB free on the disk holding %s, and the results need about %.0f MB; the run may "
                       "fail at the end when it writes them", free / 1e6, destination, needed / 1e6)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0
