"""Reports for every sample of a samplesheet: validated up front, one folder per sample, an index page.

Samplesheet (CSV, or TSV when the name ends in .tsv/.txt), one row per sample:

=============  ========  =====================================================================================
column         required  meaning
=============  ========  =====================================================================================
sample         yes       name of the sample; its output folder (letters, digits, ``-``, ``_``, ``.``)
input          yes       .h5ad, .rds, .h5mu or Space Ranger folder; several slices to integrate: ``a.h5ad;b.h5ad``
method         no        staig (default), spotscape, spami, baseline or precomputed (domains already in the input)
n_domains      no        number of domains (empty: chosen by silhouette)
species        no        human, mouse, ... or auto (default: read from the gene IDs)
gene_sets      no        a GMT file to use instead of GO (any species)
image          no        a tissue image to draw the domains on; ``image_scale`` its pixels per coordinate unit
modality_NAME  no        further omics of the same section for spami/baseline, e.g. ``modality_adt``
seed, epochs   no        random seed (default 0) and training epochs (default: the method's)
=============  ========  =====================================================================================

Relative paths are read from the samplesheet's folder. A sample whose folder holds a report and a ``status.json``
saying ``ok`` is complete and skipped on the next run (``force=True`` redoes it); one failed sample never stops
the others, and the index lists its error.
"""
from __future__ import annotations

import html
import json
import os
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import io
from .._utils import atomic_path, logger
from ..errors import InputError
from .sample import REPORT_METHODS

REPORT_FILE = "report.html"
NOTEBOOK_FILE = "report.ipynb"
STATUS_FILE = "status.json"
INDEX_FILE = "index.html"
REQUIRED_COLUMNS = ("sample", "input")
OPTIONAL_COLUMNS = ("method", "n_domains", "species", "gene_sets", "image", "image_scale", "seed", "epochs")
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


def read_samplesheet(path: str | os.PathLike) -> list[SampleSpec]:
    """Read and validate a samplesheet; every problem is reported at once, before any work starts."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"samplesheet '{path}' does not exist")
    separator = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    sheet = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, skipinitialspace=True)
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
              only: str | None = None, engine: str = "auto", device: str = "auto",
              progress: bool = True) -> dict[str, dict]:
    """Report every sample (or only ``only``) into ``out/<sample>/``, then write ``out/index.html``.

    Returns each sample's status record ('ok', 'skipped' when already complete, 'failed' with the error).
    ``jobs`` samples run at once, each with its share of the CPU threads.
    """
    from tqdm.auto import tqdm

    every = read_samplesheet(samplesheet)
    specs = every
    if only is not None:
        specs = [s for s in every if s.sample == only]
        if not specs:
            raise InputError(f"sample '{only}' is not in the samplesheet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    statuses: dict[str, dict] = {}
    todo = []
    for spec in specs:
        if not force and is_complete(out / spec.sample):
            statuses[spec.sample] = {**read_status(out / spec.sample), "skipped": True}
            logger.info("%s: complete, skipped (force to redo)", spec.sample)
        else:
            todo.append(spec)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_sample, spec, out / spec.sample, engine=engine, device=device,
                               threads=threads): spec for spec in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="samples", disable=not progress):
            spec = futures[future]
            statuses[spec.sample] = future.result()
    if only is None:
        write_index(out, [s.sample for s in every])
    failed = [name for name, status in statuses.items() if status["status"] != "ok"]
    if failed:
        logger.warning("%d of %d samples failed: %s", len(failed), len(statuses), ", ".join(failed))
    return statuses


def run_sample(spec: SampleSpec, folder: Path, *, engine: str = "auto", device: str = "auto",
               threads: int | None = None) -> dict:
    """Report one sample into ``folder``; never raises: the status record says what happened."""
    from .render import render_report

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    status_path = folder / STATUS_FILE
    if status_path.exists():
        status_path.unlink()  # a half-redone folder must not look complete
    try:
        render_report(spec.inputs, folder / REPORT_FILE, sample=spec.sample, method=spec.method,
                      n_domains=spec.n_domains, modalities=spec.modalities, species=spec.species,
                      gene_sets=spec.gene_sets, engine=engine, seed=spec.seed, epochs=spec.epochs, device=device,
                      image=spec.image, image_scale=spec.image_scale, outputs_dir=folder,
                      notebook=folder / NOTEBOOK_FILE, threads=threads)
        provenance = json.loads((folder / "provenance.json").read_text())
        status = {"sample": spec.sample, "status": "ok", "n_domains": provenance.get("n_domains"),
                  "n_spots": provenance.get("n_spots"), "method": spec.method,
                  "go_engine": provenance.get("enrichment", {}).get("engine")}
    except Exception as error:  # noqa: BLE001 - one sample's failure, whatever it is, is recorded, not raised
        logger.error("%s failed: %s", spec.sample, error)
        status = {"sample": spec.sample, "status": "failed", "method": spec.method,
                  "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=5)}
    status["seconds"] = round(time.perf_counter() - start, 1)
    io.write_json(status, status_path)
    return status


def is_complete(folder: Path) -> bool:
    """A sample folder with its report and an 'ok' status (written last) is complete."""
    return (folder / REPORT_FILE).is_file() and read_status(folder).get("status") == "ok"


def read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_index(out: Path, samples: list[str]) -> Path:
    """``index.html``: every sample with its status, domains, spots, time and a link, or its error."""
    rows, n_failed = [], 0
    for name in samples:
        status = read_status(out / name)
        state = status.get("status", "not run")
        n_failed += state != "ok"
        link = (f'<a href="{html.escape(name)}/{REPORT_FILE}">{html.escape(name)}</a>'
                if state == "ok" else html.escape(name))
        detail = html.escape(status.get("error", "")) if state != "ok" else ""
        rows.append(f'<tr class="{html.escape(state.replace(" ", "-"))}"><td>{link}</td><td>{html.escape(state)}</td>'
                    f"<td>{html.escape(str(status.get('method', '')))}</td>"
                    f"<td>{status.get('n_domains', '') or ''}</td><td>{status.get('n_spots', '') or ''}</td>"
                    f"<td>{status.get('seconds', '')}</td><td><pre>{detail}</pre></td></tr>")
    summary = f"{len(samples) - n_failed} of {len(samples)} samples reported" + (
        f"; {n_failed} failed or not run" if n_failed else "")
    page = _INDEX.format(summary=html.escape(summary), rows="".join(rows), created=time.strftime("%Y-%m-%d %H:%M"))
    with atomic_path(out / INDEX_FILE) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out / INDEX_FILE


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
    if len(inputs) > 1 and method in ("spami", "baseline", "precomputed"):
        problems.append(f"method {method} takes one input, not {len(inputs)}")
    spec = SampleSpec(sample=name, inputs=inputs, method=method, n_domains=n_domains, species=species,
                      gene_sets=gene_sets, image=image, image_scale=image_scale, seed=seed or 0, epochs=epochs,
                      modalities=modalities)
    return spec, problems


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
tr.failed td, tr.not-run td {{ background: #fdecea; }} pre {{ margin: 0; white-space: pre-wrap; max-width: 700px; }}
</style></head>
<body><h1>spatialdomains batch</h1><p>{summary} (updated {created})</p>
<table><thead><tr><th>sample</th><th>status</th><th>method</th><th>domains</th><th>spots</th><th>seconds</th>
<th>error</th></tr></thead><tbody>{rows}</tbody></table></body></html>
"""
