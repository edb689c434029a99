"""Reports for every sample of a samplesheet: validated up front, one folder per sample, an index page.

Samplesheet (CSV, or TSV when the name ends in .tsv/.txt), one row per sample. Required columns: ``sample`` (its
output folder's name: letters, digits, ``-``, ``_``, ``.``) and ``input`` (.h5ad, .rds, .h5mu, SpatialData .zarr,
or a Space Ranger (Visium, Visium HD) or Xenium output folder; several slices to integrate: ``a.h5ad;b.h5ad``).
Optional: ``bin_size`` (Visium HD: 2, 8, 16 µm or the run's custom size, or ``cells``), ``modality_NAME`` (further omics of the same
section, e.g. ``modality_adt``), every option of a report (:class:`~spatialdomains.report.request.ReportRequest`:
``method``, ``n_domains``, ``species``, ``gene_sets``, ``image``, ``image_scale``, ``seed``, ``label_key``,
``condition_key``, ``refine`` (auto, yes or no), ...) and every setting of the methods (``preset``, ``epochs``,
``tau``, ...), each checked as the method checks it. An empty cell takes the default.

Relative paths are read from the samplesheet's folder. Each sample's ``status.json`` records its inputs (size and
modification time of every file) and its parameters; on the next run a sample whose report is complete and whose
inputs and parameters are unchanged is skipped (``force=True`` redoes it), a changed one is redone. One failed
sample never stops the others, and the index lists its error. A sample folder is replaced as a whole, only once
the sample is finished. Ctrl-C or SIGTERM stops the batch promptly: running samples are marked interrupted (their
folders left as they were), the index is written, and the signal is raised again for the caller.
"""
from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import signal
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from .. import io
from .._utils import atomic_path, logger, progress_steps
from ..errors import InputError, Interrupted, interface, option
from ..outputs import Output
from ..results import FILES
from .request import ALIASES, RUN_SETTINGS, ReportRequest, RequestError, field_type, request_fields

REPORT_FILE = "report.html"
NOTEBOOK_FILE = "report.ipynb"
STATUS_FILE = "status.json"
INDEX_FILE = "index.html"
REQUIRED_COLUMNS = ("sample", "input")
#: Columns that say where a sample's data are, beside the report's options.
INPUT_COLUMNS = ("bin_size",)
#: The words of the refine column (and the command line's --refine) and what they mean to a report.
REFINE_VALUES = {"auto": "auto", "yes": True, "no": False}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _defaults() -> dict:
    """Each parameter of a request at its default: what a status from an older version, which did not record a
    parameter, ran with."""
    defaults = {}
    for spec in dataclasses.fields(ReportRequest):
        if spec.metadata.get("how"):
            continue
        if spec.default is not dataclasses.MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            defaults[spec.name] = spec.default_factory()
    return defaults


_DEFAULTS = _defaults()
#: The samplesheet columns that are the report's own options.
_REPORT_COLUMNS = {f.name for f in request_fields() if not f.metadata.get("how")}


def option_columns() -> dict[str, str]:
    """Column → the option it sets: the report's own options (those that say how it runs are the batch's), then
    every setting of the registered methods and their friendly names (``epochs``)."""
    from .. import methods

    columns = {f.name: f.name for f in request_fields() if not f.metadata.get("how") and f.name != "sample"}
    settings = sorted({name for name in methods.names() for name in methods.get(name).option_names()})
    columns.update({name: name for name in (*RUN_SETTINGS, *settings)})
    columns.update({alias: name for alias, name in ALIASES.items()})
    return columns


def fingerprint(request: ReportRequest) -> dict:
    """What decides a sample's results: its parameters and the size and modification time of its inputs."""
    return {"parameters": request.fingerprint_parameters(),
            "inputs": {path: _file_state(Path(path)) for path in request.paths()}}


def read_samplesheet(path: str | os.PathLike, *, engine: str = "auto") -> list[ReportRequest]:
    """Read and validate a samplesheet into one report request per row; every problem is reported at once, before
    any work starts. ``engine`` is the GO enrichment engine of rows without an ``engine`` column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"samplesheet '{path}' does not exist")
    separator = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        sheet = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"samplesheet {path.name} is empty: it needs a header line (sample,input,...) and one "
                         "line per sample") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"samplesheet {path.name} is not a readable {'TSV' if separator != ',' else 'CSV'} file "
                         f"({str(error).splitlines()[0]})") from None
    sheet.columns = [c.strip() for c in sheet.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise InputError(f"samplesheet {path.name}: missing column(s) {', '.join(missing)} "
                         f"(columns found: {', '.join(sheet.columns)})")
    columns = option_columns()
    known = {*REQUIRED_COLUMNS, *INPUT_COLUMNS, *columns}
    unknown = [c for c in sheet.columns if c not in known and not c.startswith("modality_")]
    errors = [f"unknown column '{c}' (known: {', '.join((*REQUIRED_COLUMNS, *INPUT_COLUMNS))}, modality_NAME, the "
              f"report's options ({', '.join(c for c in columns if c in _REPORT_COLUMNS)}) and the methods' settings "
              f"(e.g. preset, epochs, tau))" for c in unknown]
    if sheet.empty:
        errors.append("no samples")
    base = path.parent
    specs, seen = [], set()
    for number, row in enumerate(sheet.to_dict("records"), start=2):  # line 1 is the header
        where = f"line {number}"
        name = row.get("sample", "").strip()
        spec, problems = _request(row, base, engine, {k: v for k, v in columns.items() if k in sheet.columns})
        if name and name in seen:
            problems.append(f"sample '{name}' appears twice")
        seen.add(name)
        errors.extend(f"{where} ({name or 'no name'}): {p}" for p in problems)
        specs.append(spec)
    if errors:
        raise InputError(f"samplesheet {path.name} has {len(errors)} problem(s):\n  - " + "\n  - ".join(errors))
    return specs


def run_batch(samplesheet: str | os.PathLike, out: str | os.PathLike, *, jobs: int = 1, force: bool = False,
              only: str | None = None, engine: str = "auto", device: str = "auto", threads: int | None = None,
              progress: bool = True) -> dict[str, dict]:
    """Report every sample (or only ``only``) into ``out/<sample>/``, then write ``out/index.html``.

    Returns each sample's status record ('ok' (with ``skipped`` when unchanged since a complete run), 'failed' with
    the error). ``jobs`` samples run at once, each with ``threads`` CPU threads (default: its share of the cores
    free when the batch starts; with one job, the cores free when each sample starts). Every sample's folder is
    checked before any work (it must not hold an input, nor files spatialdomains did not write).
    """
    every = [dataclasses.replace(request, device=device, threads=threads)
             for request in read_samplesheet(samplesheet, engine=engine)]
    specs = every
    if only is not None:
        specs = [s for s in every if s.sample == only]
        if not specs:
            raise InputError(f"sample '{only}' is not in the samplesheet")
    out = Path(out)
    every_input = [samplesheet, *(path for spec in every for path in spec.paths())]  # no output may hold one
    folders = {spec.sample: _sample_output(spec, out, every_input) for spec in specs}
    for folder in folders.values():
        folder.check()
    out.mkdir(parents=True, exist_ok=True)
    if threads is None and jobs > 1:
        from ..models.trainer import free_cores

        share = max(1, free_cores() // jobs)
        specs = [dataclasses.replace(spec, threads=share) for spec in specs]
    statuses: dict[str, dict] = {}
    todo = []
    for spec in specs:
        status = read_status(out / spec.sample)
        changes = None if force else _changes(out / spec.sample, status, fingerprint(spec))
        if changes == []:
            statuses[spec.sample] = {**status, "skipped": True}
            logger.info("%s: complete and unchanged, skipped (force to redo)", spec.sample)
        else:
            if changes:
                logger.info("%s: %s; redoing it", spec.sample, "; ".join(changes))
            todo.append(spec)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(run_sample, spec, folders[spec.sample], stop=stop): spec for spec in todo}
    try:
        for future in progress_steps(as_completed(futures), "samples", total=len(futures), unit="samples",
                                     enabled=progress):
            spec = futures[future]
            statuses[spec.sample] = future.result()
    except KeyboardInterrupt as interrupt:
        statuses.update(_stop_samples(stop, futures, interrupt))
        pool.shutdown(wait=True, cancel_futures=True)
        if only is None:
            write_index(out, [s.sample for s in every], current=statuses)
        raise
    pool.shutdown(wait=True)
    if only is None:
        write_index(out, [s.sample for s in every])
    failed = [name for name, status in statuses.items() if status["status"] != "ok"]
    if failed:
        logger.warning("%d of %d samples failed: %s", len(failed), len(statuses), ", ".join(failed))
    return statuses


def _sample_output(spec: ReportRequest, out: Path, every_input: list) -> Output:
    """A sample's folder: replaced as a whole when the sample is (re)done, never if it holds an input."""
    return Output(out / spec.sample, inputs=every_input, force=True, flag=f"the folder of sample '{spec.sample}'")


def _changes(folder: Path, status: dict, fingerprint: dict) -> list[str] | None:
    """What changed since the sample's last complete run ([] when nothing did); None when it never completed."""
    if status.get("status") != "ok" or not (folder / REPORT_FILE).is_file():
        return None
    before = status.get("fingerprint")
    if not isinstance(before, dict):
        return ["no record of its inputs and parameters (made by an older version)"]
    changes = [f"input {Path(path).name} changed" for path, state in fingerprint["inputs"].items()
               if before.get("inputs", {}).get(path) != state]
    changes += [f"input {Path(path).name} no longer used" for path in before.get("inputs", {})
                if path not in fingerprint["inputs"]]
    # A parameter that an older version did not record had its default then: no reason to redo the sample.
    old = _by_column({**_DEFAULTS, **_upgraded(before.get("parameters", {}))})
    new = _by_column(fingerprint["parameters"])
    changes += [f"{name} {old.get(name)!r} → {new.get(name)!r}" for name in dict.fromkeys([*new, *old])
                if name not in ("inputs", "modalities") and old.get(name) != new.get(name)]
    return changes


def _by_column(parameters: dict) -> dict:
    """Parameters named as the samplesheet's columns, each method setting on its own (``epochs 20 → 30``)."""
    named = {name: value for name, value in parameters.items() if name != "model_options"}
    named.update({_column_of(name): value for name, value in (parameters.get("model_options") or {}).items()})
    return named


def _upgraded(parameters: dict) -> dict:
    """Parameters as an older version recorded them, in today's form: ``epochs`` and ``preset`` among the method's
    settings, ``refine`` as its value rather than its word."""
    parameters = dict(parameters)
    settings = dict(parameters.get("model_options") or {})
    for old, new in (("epochs", "n_epochs"), ("preset", "preset")):
        value = parameters.pop(old, None) if old not in _DEFAULTS else None
        if value is not None:
            settings[new] = value
    parameters["model_options"] = settings
    if isinstance(parameters.get("refine"), str):
        parameters["refine"] = REFINE_VALUES.get(parameters["refine"], parameters["refine"])
    return parameters


def _stop_samples(stop: threading.Event, futures: dict, interrupt: KeyboardInterrupt) -> dict[str, dict]:
    """Stop the running samples (their report kernels are ended, their partial folders removed) and say so."""
    import psutil

    stop.set()
    for child in psutil.Process().children(recursive=True):  # the report kernels of the running samples
        try:
            child.terminate()
        except psutil.Error:
            continue
    number = getattr(interrupt, "signal_number", signal.SIGINT)
    why = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
    stopped = {}
    for future, spec in futures.items():
        if not future.done() or future.cancelled():
            future.cancel()
            stopped[spec.sample] = {"sample": spec.sample, "status": "interrupted", "method": spec.method,
                                    "error": f"stopped by {why} before it finished; run the batch again to do it"}
    logger.warning("batch stopped by %s: %d sample(s) interrupted, their folders left as they were", why,
                   len(stopped))
    return stopped


def run_sample(spec: ReportRequest, output: Output, *, stop: threading.Event | None = None) -> dict:
    """Report one sample into its folder, replaced as a whole when done; never raises for the sample's own
    failure: the status record (also in the folder) says what happened."""
    from ..errors import OutputFailed
    from .render import render_report

    start = time.perf_counter()
    base = {"sample": spec.sample, "method": spec.method}
    try:
        with output.writing({"command": "batch", "method": spec.method, "inputs": spec.paths()}) as folder:
            try:
                render_report(out=folder / REPORT_FILE, request=spec, outputs_dir=folder,
                              notebook=folder / NOTEBOOK_FILE, force=True)
                provenance = json.loads((folder / FILES["provenance"]).read_text())
                status = {**base, "status": "ok", "n_domains": provenance.get("n_domains"),
                          "n_spots": provenance.get("n_spots"), "qc": provenance.get("qc", {}),
                          "go_engine": provenance.get("enrichment", {}).get("engine")}
            except Exception as error:  # noqa: BLE001 - one sample's failure, whatever it is, is recorded
                if stop is not None and stop.is_set():  # its kernel was ended by the stop: not its failure
                    raise Interrupted(signal.SIGINT) from None
                logger.error("%s failed: %s", spec.sample, error)
                status = {**base, "status": "failed", "error": f"{type(error).__name__}: {error}",
                          "traceback": traceback.format_exc(limit=5)}
            if stop is not None and stop.is_set():  # stopped meanwhile (its kernel ended): keep the old folder
                raise Interrupted(signal.SIGINT)
            status["seconds"] = round(time.perf_counter() - start, 1)
            status["fingerprint"] = fingerprint(spec)
            io.write_json(status, folder / STATUS_FILE)
    except OutputFailed as error:
        logger.error("%s failed: %s", spec.sample, error)
        status = {**base, "status": "failed", "error": str(error), "seconds": round(time.perf_counter() - start, 1)}
    return status


def read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_index(out: Path, samples: list[str], current: dict[str, dict] | None = None) -> Path:
    """``index.html``: every sample with its status, a thumbnail of its domains, spots, domains, QC headline
    numbers, time and a link, or its error; a searchable, sortable table with a CSV download (offline).

    ``current``: statuses of this run that override the folders' (samples interrupted before they finished)."""
    from .render import _tables_script

    rows, not_ok = [], {}
    for name in samples:
        status = (current or {}).get(name) or read_status(out / name)
        state = status.get("status", "not run")
        if state != "ok":
            not_ok[state] = not_ok.get(state, 0) + 1
        link = (f'<a href="{html.escape(name)}/{REPORT_FILE}">{html.escape(name)}</a>'
                if state == "ok" else html.escape(name))
        detail = html.escape(status.get("error", "")) if state != "ok" else ""
        qc = status.get("qc") or {}
        numbers = [status.get("n_spots"), status.get("n_domains"), qc.get("median counts"), qc.get("median genes"),
                   qc.get("median % mitochondrial"), status.get("seconds")]
        cells = "".join(f'<td data-order="{value}">{value:,.{decimals}f}</td>' if isinstance(value, (int, float))
                        else "<td></td>" for value, decimals in zip(numbers, (0, 0, 0, 0, 1, 1)))
        rows.append(f'<tr class="{html.escape(state.replace(" ", "-"))}"><td>{link}</td><td>{html.escape(state)}</td>'
                    f"<td>{_thumbnail(out / name, state)}</td><td>{html.escape(str(status.get('method', '')))}</td>"
                    f"{cells}<td><pre>{detail}</pre></td></tr>")
    summary = f"{len(samples) - sum(not_ok.values())} of {len(samples)} samples reported" + "".join(
        f"; {count} {state}" for state, count in sorted(not_ok.items()))
    tables_style, tables_script = _tables_script()
    page = _INDEX.format(summary=html.escape(summary), rows="".join(rows), created=time.strftime("%Y-%m-%d %H:%M"),
                         tables_style=tables_style, tables_script=tables_script)
    with atomic_path(out / INDEX_FILE) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out / INDEX_FILE


def _thumbnail(folder: Path, state: str) -> str:
    """The sample's small domain map, embedded (the index stays one file), or nothing."""
    import base64

    picture = folder / FILES["map"]
    if state != "ok" or not picture.is_file():
        return ""
    data = base64.b64encode(picture.read_bytes()).decode("ascii")
    return f'<img class="thumb" src="data:image/png;base64,{data}" alt="domains of {html.escape(folder.name)}">'


def _request(row: dict, base: Path, engine: str, columns: dict[str, str]) -> tuple[ReportRequest | None, list[str]]:
    """One row as a checked report request (None when it has problems), and its problems in the sheet's words."""
    problems = []
    name = row.get("sample", "").strip()
    if not name:
        problems.append("empty sample name")
    elif not _SAFE_NAME.match(name):
        problems.append(f"sample name '{name}' must use only letters, digits, '.', '-' and '_' (it names a folder)")
    inputs = [_absolute(p.strip(), base) for p in row.get("input", "").split(";") if p.strip()]
    if not inputs:
        problems.append("empty input")
    bin_size = (row.get("bin_size") or "").strip() or None
    if bin_size is not None and all(Path(p).exists() for p in inputs):
        try:  # the input becomes the folder of that bin size, so the sample records what it read
            with interface("python"):  # a samplesheet column is spelled as Python's keyword (bin_size=...)
                inputs = [str(io.input_path(p, bin_size)) for p in inputs]
        except InputError as error:
            problems.append(str(error))
    options = {"sample": name, "engine": engine,
               "modalities": {column.removeprefix("modality_"): _absolute(value.strip(), base)
                              for column, value in row.items() if column.startswith("modality_") and value.strip()}}
    for column, name_of in columns.items():
        text = (row.get(column) or "").strip()
        if text:
            try:
                options[column] = _parsed(name_of, text, base, row)
            except ValueError as error:
                problems.append(str(error))
    if not inputs:
        return None, problems
    try:
        with interface("samplesheet"):
            return ReportRequest.build(inputs, **options), problems
    except RequestError as error:
        return None, problems + error.problems


def _parsed(name: str, text: str, base: Path, row: dict):
    """A cell's text as the value of option ``name`` (a ValueError naming the column when it is not one)."""
    from .. import methods

    if name == "refine":
        if text.lower() not in REFINE_VALUES:
            raise ValueError(f"refine '{text}' is not one of {', '.join(REFINE_VALUES)}")
        return REFINE_VALUES[text.lower()]
    if name in {f.name for f in request_fields()}:
        kind, path = field_type(name), any(f.name == name and f.metadata.get("path") for f in request_fields())
    else:
        method = (row.get("method") or "staig").strip().lower()
        kind, path = _setting_type(methods.get(method) if method in methods.names() else None, name), False
    if path:
        return _absolute(text, base)
    if kind is bool:
        if text.lower() not in ("yes", "no", "true", "false"):
            raise ValueError(f"{_column_of(name)} '{text}' is not one of yes, no")
        return text.lower() in ("yes", "true")
    if kind in (int, float):
        try:
            number = float(text) if kind is float else int(text)
        except ValueError:
            raise ValueError(f"{_column_of(name)} '{text}' is not a {'number' if kind is float else 'whole number'}") \
                from None
        return number
    return text.lower() if name in ("method", "species") else text


def _setting_type(method, name: str) -> type:
    """The plain type of a method's setting (or run setting), for parsing a cell; str when not known."""
    from ..methods.base import RunConfig

    holders = [*(m.config_class for m in [method] if m is not None), RunConfig]
    return next((kind for kind in (field_type(name, holder) for holder in holders) if kind is not None), str)


def _column_of(name: str) -> str:
    """An option as the samplesheet's column names it (``n_epochs`` is ``epochs``)."""
    with interface("samplesheet"):
        return option(name)


def _file_state(path: Path) -> dict | None:
    """Size and modification time of a file, or of every file in a folder (a Space Ranger folder)."""
    if path.is_file():
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {str(p.relative_to(path)): _file_state(p) for p in files}
    return None


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>spatialdomains batch</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }}
tr.failed td, tr.not-run td, tr.interrupted td {{ background: #fdecea; }} pre {{ margin: 0; white-space: pre-wrap; max-width: 700px; }}
img.thumb {{ width: 120px; height: auto; }}
</style>
<style>{tables_style}</style></head>
<body><h1>spatialdomains batch</h1><p>{summary} (updated {created})</p>
<table class="sortable full-table"><caption>samples</caption><thead><tr><th>sample</th><th>status</th><th>domains map</th>
<th>method</th><th>spots</th><th>domains</th><th>median counts</th><th>median genes</th><th>median % mito</th>
<th>seconds</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>
<script type="module">{tables_script}</script></body></html>
"""
