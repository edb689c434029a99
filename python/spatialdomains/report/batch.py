"""Reports for every sample of a samplesheet: validated up front, one folder per sample, an index page.

Samplesheet (CSV, or TSV when the name ends in .tsv/.txt), one row per sample:

=============  ========  =====================================================================================
column         required  meaning
=============  ========  =====================================================================================
sample         yes       name of the sample; its output folder (letters, digits, ``-``, ``_``, ``.``)
input          yes       .h5ad, .rds, .h5mu, or a Space Ranger (Visium, Visium HD) or Xenium output folder;
                         several slices to integrate: ``a.h5ad;b.h5ad``
bin_size       no        Visium HD inputs: bin size in µm (2, 8 or 16; default 8) or ``cells`` (Space Ranger 4)
label_key      no        an obs column annotating the spots, which the report compares with the domains (and,
                         for several slices, predicts in each slice from the most annotated one)
condition_key  no        several slices: an obs column giving each slice's condition (control, disease, ...);
                         the report compares the conditions within each domain
method         no        staig (default), spotscape, spami, baseline or precomputed (domains already in the input)
n_domains      no        number of domains (empty: chosen by silhouette)
species        no        human, mouse, ... or auto (default: read from the gene IDs)
gene_sets      no        a GMT file to use instead of GO (any species)
image          no        a tissue image to draw the domains on; ``image_scale`` its pixels per coordinate unit
modality_NAME  no        further omics of the same section for spami/baseline, e.g. ``modality_adt``
seed, epochs   no        random seed (default 0) and training epochs (default: the method's)
preset         no        the method's settings preset, e.g. ``cells`` for STAIG on Xenium, MERFISH or CosMx cells
refine         no        majority vote over each spot's 15 nearest: auto (default: the method's choice), yes, no
=============  ========  =====================================================================================

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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import io
from .._utils import atomic_path, logger, progress_steps
from ..errors import InputError, Interrupted, interface
from ..outputs import Output
from .sample import REPORT_METHODS

REPORT_FILE = "report.html"
NOTEBOOK_FILE = "report.ipynb"
STATUS_FILE = "status.json"
INDEX_FILE = "index.html"
REQUIRED_COLUMNS = ("sample", "input")
OPTIONAL_COLUMNS = ("method", "n_domains", "species", "gene_sets", "image", "image_scale", "seed", "epochs",
                    "bin_size", "label_key", "condition_key", "preset", "refine")
#: The words of the refine column (and the command line's --refine) and what they mean to :func:`render_report`.
REFINE_VALUES = {"auto": "auto", "yes": True, "no": False}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SampleSpec:
    """One validated samplesheet row, with absolute paths."""

    sample: str
    inputs: list[str]
    method: str = "staig"
    n_domains: int | None = None
    species: str = "auto"
    gene_sets: str | None = None
    image: str | None = None
    image_scale: float = 1.0
    seed: int = 0
    epochs: int | None = None
    modalities: dict[str, str] = field(default_factory=dict)
    label_key: str | None = None
    condition_key: str | None = None
    preset: str | None = None
    refine: str = "auto"

    def paths(self) -> list[str]:
        """Every file or folder this sample reads."""
        return [*self.inputs, *self.modalities.values(), *(p for p in (self.image, self.gene_sets) if p)]

    def fingerprint(self, engine: str) -> dict:
        """What decides the sample's results: its parameters and the size and modification time of its inputs."""
        return {"parameters": {**dataclasses.asdict(self), "engine": engine},
                "inputs": {path: _file_state(Path(path)) for path in self.paths()}}


_SPEC_DEFAULTS = {spec_field.name: spec_field.default for spec_field in dataclasses.fields(SampleSpec)
                  if spec_field.default is not dataclasses.MISSING}


def read_samplesheet(path: str | os.PathLike) -> list[SampleSpec]:
    """Read and validate a samplesheet; every problem is reported at once, before any work starts."""
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
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [c for c in sheet.columns if c not in known and not c.startswith("modality_")]
    errors = [f"unknown column '{c}' (known: {', '.join(sorted(known))}, modality_NAME)" for c in unknown]
    if sheet.empty:
        errors.append("no samples")
    base = path.parent
    specs, seen = [], set()
    for number, row in enumerate(sheet.to_dict("records"), start=2):  # line 1 is the header
        where = f"line {number}"
        spec, problems = _spec(row, base)
        if spec.sample in seen:
            problems.append(f"sample '{spec.sample}' appears twice")
        seen.add(spec.sample)
        errors.extend(f"{where} ({spec.sample or 'no name'}): {p}" for p in problems)
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
    every = read_samplesheet(samplesheet)
    specs = every
    if only is not None:
        specs = [s for s in every if s.sample == only]
        if not specs:
            raise InputError(f"sample '{only}' is not in the samplesheet")
    out = Path(out)
    every_input = [samplesheet, *(path for spec in every for path in spec.paths())]
    folders = {spec.sample: _sample_output(spec, out, every_input) for spec in specs}
    for folder in folders.values():
        folder.check()
    out.mkdir(parents=True, exist_ok=True)
    if threads is None and jobs > 1:
        from ..models.trainer import free_cores

        threads = max(1, free_cores() // jobs)
    statuses: dict[str, dict] = {}
    todo = []
    for spec in specs:
        status = read_status(out / spec.sample)
        changes = None if force else _changes(out / spec.sample, status, spec.fingerprint(engine))
        if changes == []:
            statuses[spec.sample] = {**status, "skipped": True}
            logger.info("%s: complete and unchanged, skipped (force to redo)", spec.sample)
        else:
            if changes:
                logger.info("%s: %s; redoing it", spec.sample, "; ".join(changes))
            todo.append(spec)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(run_sample, spec, folders[spec.sample], engine=engine, device=device, threads=threads,
                           stop=stop): spec for spec in todo}
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


def _sample_output(spec: SampleSpec, out: Path, every_input: list) -> Output:
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
    old = {**_SPEC_DEFAULTS, **before.get("parameters", {})}
    changes += [f"{name} {old.get(name)!r} → {value!r}" for name, value in fingerprint["parameters"].items()
                if name not in ("inputs", "modalities") and old.get(name) != value]
    return changes


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


def run_sample(spec: SampleSpec, output: Output, *, engine: str = "auto", device: str = "auto",
               threads: int | None = None, stop: threading.Event | None = None) -> dict:
    """Report one sample into its folder, replaced as a whole when done; never raises for the sample's own
    failure: the status record (also in the folder) says what happened."""
    from ..errors import OutputFailed
    from .render import render_report

    start = time.perf_counter()
    base = {"sample": spec.sample, "method": spec.method}
    try:
        with output.writing({"command": "batch", "method": spec.method, "inputs": spec.paths()}) as folder:
            try:
                render_report(spec.inputs, folder / REPORT_FILE, sample=spec.sample, method=spec.method,
                              n_domains=spec.n_domains, modalities=spec.modalities, species=spec.species,
                              gene_sets=spec.gene_sets, engine=engine, seed=spec.seed, epochs=spec.epochs,
                              device=device, image=spec.image, image_scale=spec.image_scale, outputs_dir=folder,
                              notebook=folder / NOTEBOOK_FILE, threads=threads, force=True,
                              label_key=spec.label_key, condition_key=spec.condition_key,
                              refine=REFINE_VALUES[spec.refine],
                              model_options={"preset": spec.preset} if spec.preset else None)
                provenance = json.loads((folder / "provenance.json").read_text())
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
            status["fingerprint"] = spec.fingerprint(engine)
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

    from .sample import SAMPLE_FILES

    picture = folder / SAMPLE_FILES["map"]
    if state != "ok" or not picture.is_file():
        return ""
    data = base64.b64encode(picture.read_bytes()).decode("ascii")
    return f'<img class="thumb" src="data:image/png;base64,{data}" alt="domains of {html.escape(folder.name)}">'


def _spec(row: dict, base: Path) -> tuple[SampleSpec, list[str]]:
    problems = []
    name = row.get("sample", "").strip()
    if not name:
        problems.append("empty sample name")
    elif not _SAFE_NAME.match(name):
        problems.append(f"sample name '{name}' must use only letters, digits, '.', '-' and '_' (it names a folder)")
    inputs = [_absolute(p.strip(), base) for p in row.get("input", "").split(";") if p.strip()]
    if not inputs:
        problems.append("empty input")
    problems.extend(f"input '{p}' does not exist" for p in inputs if not Path(p).exists())
    bin_size = (row.get("bin_size") or "").strip() or None
    if bin_size is not None and all(Path(p).exists() for p in inputs):
        try:  # the input becomes the folder of that bin size, so the sample records what it read
            with interface("python"):  # a samplesheet column is spelled as Python's keyword (bin_size=...)
                inputs = [str(io.input_path(p, bin_size)) for p in inputs]
        except InputError as error:
            problems.append(str(error))
    method = (row.get("method") or "staig").strip().lower()
    if method not in REPORT_METHODS:
        problems.append(f"method '{method}' is not one of {', '.join(REPORT_METHODS)}")
    n_domains = _integer(row.get("n_domains"), "n_domains", problems, minimum=2)
    seed = _integer(row.get("seed"), "seed", problems, minimum=0)
    epochs = _integer(row.get("epochs"), "epochs", problems, minimum=1)
    species = (row.get("species") or "auto").strip().lower()
    from ..analysis.annotation import ORG_PACKAGES

    if species not in ("auto", *ORG_PACKAGES):
        problems.append(f"species '{species}' is not one of auto, {', '.join(ORG_PACKAGES)} (or give gene_sets)")
    gene_sets = _optional_file(row.get("gene_sets"), base, "gene_sets", problems)
    image = _optional_file(row.get("image"), base, "image", problems)
    image_scale = 1.0
    if (row.get("image_scale") or "").strip():
        try:
            image_scale = float(row["image_scale"])
            if image_scale <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"image_scale '{row['image_scale']}' must be a positive number")
    modalities = {}
    for column, value in row.items():
        if column.startswith("modality_") and value.strip():
            modality = column.removeprefix("modality_")
            modalities[modality] = _absolute(value.strip(), base)
            if not Path(modalities[modality]).exists():
                problems.append(f"{column} '{value}' does not exist")
    if modalities and method not in ("spami", "baseline"):
        problems.append(f"modality columns apply to methods spami and baseline, not {method}")
    if method == "spami" and not modalities and not (len(inputs) == 1 and inputs[0].lower().endswith(".h5mu")):
        problems.append("method spami needs a second omics: a modality_NAME column or an .h5mu input")
    preset = (row.get("preset") or "").strip() or None
    if preset is not None and method in REPORT_METHODS:
        from .. import methods

        names = () if method == "precomputed" else methods.get(method).preset_names()
        if preset not in names:
            problems.append(f"preset '{preset}' does not apply to method {method}"
                            + (f" (its presets: {', '.join(names)})" if names else ", which trains no model"))
    refine = (row.get("refine") or "auto").strip().lower()
    if refine not in REFINE_VALUES:
        problems.append(f"refine '{refine}' is not one of {', '.join(REFINE_VALUES)}")
    elif refine != "auto" and method == "precomputed":
        problems.append(f"refine '{refine}' does not apply to method precomputed, which reports the domains given "
                        "in the input")
    if len(inputs) > 1 and method in ("spami", "baseline", "precomputed"):
        problems.append(f"method {method} takes one input, not {len(inputs)}")
    spec = SampleSpec(sample=name, inputs=inputs, method=method, n_domains=n_domains, species=species,
                      gene_sets=gene_sets, image=image, image_scale=image_scale, seed=seed or 0, epochs=epochs,
                      modalities=modalities, label_key=(row.get("label_key") or "").strip() or None,
                      condition_key=(row.get("condition_key") or "").strip() or None, preset=preset,
                      refine=refine)
    if spec.condition_key and len(inputs) < 2:
        problems.append(f"condition_key '{spec.condition_key}' compares slices: give several inputs (a.h5ad;b.h5ad)")
    return spec, problems


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


def _optional_file(value, base: Path, column: str, problems: list) -> str | None:
    if not (value or "").strip():
        return None
    path = _absolute(value.strip(), base)
    if not Path(path).is_file():
        problems.append(f"{column} '{value}' does not exist")
    return path


def _integer(value, column: str, problems: list, *, minimum: int) -> int | None:
    if not (value or "").strip():
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        problems.append(f"{column} '{value}' is not a whole number")
        return None
    if number < minimum:
        problems.append(f"{column} must be at least {minimum}, got {number}")
    return number


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
