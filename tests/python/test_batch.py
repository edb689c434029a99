"""Batches end to end: planted GO programs recovered, every section present, the page checked in Chromium, a
broken sample, re-runs, samplesheet validation and the Snakemake workflow."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialdomains as sd
from spatialdomains.cli import main
from spatialdomains.errors import InputError
from spatialdomains.report import batch
from spatialdomains.report.sections import SECTIONS

from conftest import chromium

N_DOMAINS = 4


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """Three samples, one broken: the batch is run once and inspected by several tests."""
    folder = tmp_path_factory.mktemp("batch")
    for seed, name in ((11, "A"), (12, "B")):
        sd.io.write_h5ad(sd.datasets.simulate_visium(900, N_DOMAINS, seed=seed), folder / f"{name}.h5ad")
    (folder / "broken.h5ad").write_text("this is not an h5ad file")
    sheet = folder / "samples.csv"
    sheet.write_text("sample,input,method,n_domains,epochs\n"
                     f"A,A.h5ad,staig,{N_DOMAINS},100\n"
                     f"B,B.h5ad,spotscape,{N_DOMAINS},50\n"
                     f"C,broken.h5ad,staig,{N_DOMAINS},100\n")
    out = folder / "out"
    code = main(["batch", str(sheet), "--out", str(out), "--engine", "fallback", "--quiet"])
    return {"folder": folder, "sheet": sheet, "out": out, "code": code}


def test_planted_go_terms_are_in_each_domains_top_five(batch_run):
    """For each planted domain, the found domain covering it lists the planted GO term among its top five."""
    out = batch_run["out"] / "A"
    truth = sd.datasets.simulate_visium(900, N_DOMAINS, seed=11)
    planted = dict(zip(truth.uns["simulation"]["domains"], truth.uns["simulation"]["go_id"]))
    domains = pd.read_csv(out / "domains.csv", index_col="barcode")["domain"].astype(str)
    go = pd.read_csv(out / "go_enrichment.csv", dtype={"domain": str})
    overlap = pd.crosstab(truth.obs["ground_truth"].astype(str), domains.reindex(truth.obs_names))
    for true_domain, term in planted.items():
        found = overlap.loc[true_domain].idxmax()
        top = go[go["domain"] == found].sort_values("pvalue").head(5)["ID"].tolist()
        assert term in top, (true_domain, found, top)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["enrichment"]["engine"] == "fallback"
    assert provenance["seed"] == 0 and provenance["timings_seconds"]["domains"] > 0


def test_html_has_every_section_that_applies_and_is_self_contained(batch_run):
    page = (batch_run["out"] / "A" / batch.REPORT_FILE).read_text()
    # A single-slice STAIG run with its number of domains given, no annotation and no conditions has none of these
    # sections, nor links to them
    not_applying = {"integration", "attention", "n-domains", "denoised", "transfer", "conditions"}
    for anchor, title in SECTIONS:
        shown = f'id="{anchor}"' in page
        assert shown == (anchor not in not_applying), anchor
        assert (f'href="#{anchor}"' in page) == shown
    assert page.count("data:image/png;base64,") >= 10  # figures embedded
    assert 'class="sortable"' in page and "Show code" in page
    assert "Engine: fallback" in page and "org.Hs.eg.db" in page
    for remote in ("http://", "https://"):
        assert f'src="{remote}' not in page and f'href="{remote}' not in page



def test_report_opens_in_headless_chromium_without_console_errors(batch_run, tmp_path):
    from PIL import Image

    browser = chromium()
    page = batch_run["out"] / "A" / batch.REPORT_FILE
    shot = tmp_path / "report.png"
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--virtual-time-budget=5000", "--window-size=1280,2400",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=180)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert shot.is_file(), run.stderr[-2000:]
    assert console == [], console  # any console message: a script error or a resource that failed to load
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20  # not blank: headings, tables and figures drawn
    assert (pixels < 100).mean() > 0.01


#: Run inside the report page: search the first DEG table for one gene, then press its "Download CSV" button and
#: catch the file it would save; the results are written onto <body> for the test to read from the DOM.
_TABLE_PROBE = """<script type="module">
const ready = () => new Promise(done => { const wait = () => document.body.dataset.tablesReady ? done() :
  setTimeout(wait, 50); wait(); });
await ready();
const table = [...document.querySelectorAll("table.sortable")].find(t => t.caption &&
  t.caption.textContent.startsWith("domain 1 markers"));
const box = table.closest(".dt-container");
const gene = table.tBodies[0].rows[1].cells[0].textContent;
const search = box.querySelector("input[type=search]");
search.value = gene;
search.dispatchEvent(new Event("input", {bubbles: true}));
await new Promise(done => setTimeout(done, 300));
document.body.dataset.searched = gene;
document.body.dataset.rowsAfterSearch = table.tBodies[0].rows.length;
document.body.dataset.firstAfterSearch = table.tBodies[0].rows[0].cells[0].textContent;
HTMLAnchorElement.prototype.dispatchEvent = function () {  // the library "clicks" a download link
  document.body.dataset.csvName = this.download;
  fetch(this.href).then(response => response.text()).then(text => { document.body.dataset.csv = text; });
  return true;
};
box.querySelector(".buttons-csv").click();
await new Promise(done => setTimeout(done, 500));
</script>"""


_SECTION_PROBE = """<script type="module">
await new Promise(done => { const w = () => document.body.dataset.tablesReady ? done() : setTimeout(w, 50); w(); });
const headings = [...document.querySelectorAll("h2.report-section")];
document.body.dataset.sections = headings.map(h => h.id + ":" + Math.round(h.getBoundingClientRect().top +
  window.scrollY)).join(",") + ",end:" + document.body.scrollHeight;
</script>"""


def test_every_section_draws_something(batch_run, tmp_path):
    """Each section's band of a full-page screenshot holds text, tables or figures, not an empty space."""
    import re

    from PIL import Image

    browser = chromium()
    probe = tmp_path / "probe.html"
    probe.write_text((batch_run["out"] / "A" / batch.REPORT_FILE).read_text().replace("</body>",
                                                                                     _SECTION_PROBE + "</body>"))
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--window-size=1400,900", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    marks = re.search(r'data-sections="([^"]*)"', run.stdout).group(1).split(",")
    bands = [(name, int(top)) for name, top in (mark.split(":") for mark in marks)]
    height = min(bands[-1][1] + 50, 40_000)
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--virtual-time-budget=15000", f"--window-size=1400,{height}", f"--screenshot={shot}",
                    probe.as_uri()], capture_output=True, timeout=180)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    for (name, top), (_, bottom) in zip(bands[:-1], bands[1:]):
        band = pixels[top + 40:bottom]  # below the heading itself
        assert band.size and (band < 200).mean() > 0.005, f"section {name} looks empty"


def test_report_tables_search_and_download_the_whole_table(batch_run, tmp_path):
    import html as html_module
    import re

    browser = chromium()
    page = (batch_run["out"] / "A" / batch.REPORT_FILE).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _TABLE_PROBE + "</body>"))
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    found = {name: html_module.unescape(value) for name, value in
             re.findall(r'data-([a-z-]+)="([^"]*)"', run.stdout[:run.stdout.index(">", run.stdout.index("<body"))])}
    markers = pd.read_csv(batch_run["out"] / "A" / "markers.csv")
    significant = markers[(markers["domain"].astype(str) == "1") & markers["significant"]]
    assert found.get("first-after-search") == found.get("searched"), found.keys()
    assert 1 <= int(found["rows-after-search"]) < len(significant)
    lines = found["csv"].strip().splitlines()
    assert len(lines) == len(significant) + 1  # the header and every significant gene, not only the page shown
    header = lines[0].replace('"', "").split(",")
    assert header[0] == "symbol" and "gene_id" in header and "log2fc" in header  # symbol first, the ID beside it
    assert found["csv-name"].endswith(".csv")


def test_batch_reports_the_broken_sample_and_keeps_going(batch_run):
    out = batch_run["out"]
    assert batch_run["code"] == 1
    assert (out / "A" / batch.REPORT_FILE).is_file() and (out / "B" / batch.REPORT_FILE).is_file()
    assert not (out / "C" / batch.REPORT_FILE).exists()
    failed = batch.read_status(out / "C")
    assert failed["status"] == "failed" and "broken.h5ad" in failed["error"]
    index = (out / batch.INDEX_FILE).read_text()
    assert "2 of 3 samples reported; 1 failed" in index
    assert 'href="A/report.html"' in index and 'href="B/report.html"' in index
    assert "not a readable .h5ad file" in index


def test_second_run_skips_complete_samples(batch_run, capsys):
    out = batch_run["out"]
    before = {name: (out / name / batch.REPORT_FILE).stat().st_mtime_ns for name in ("A", "B")}
    code = main(["batch", str(batch_run["sheet"]), "--out", str(out), "--engine", "fallback", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1  # C is still broken
    assert "A: skipped (complete" in printed and "B: skipped (complete" in printed and "C: failed" in printed
    assert {name: (out / name / batch.REPORT_FILE).stat().st_mtime_ns for name in ("A", "B")} == before


def test_samplesheet_problems_are_listed_together(tmp_path):
    (tmp_path / "ok.h5ad").write_text("")
    sheet = tmp_path / "bad.csv"
    sheet.write_text("sample,input,method,n_domains,colour,preset,refine\n"
                     "A,missing.h5ad,staig,3,red,cells,yes\n"
                     "A,ok.h5ad,magic,one,blue,,\n"
                     "bad name,ok.h5ad,spami,1,green,,maybe\n"
                     "D,ok.h5ad,spotscape,3,green,cells,no\n"
                     "E,ok.h5ad,precomputed,,green,,yes\n")
    with pytest.raises(InputError) as error:
        batch.read_samplesheet(sheet)
    message = str(error.value)
    for expected in ("unknown column 'colour'", "input '", "missing.h5ad' does not exist", "appears twice",
                     "method 'magic'", "n_domains 'one' is not a whole number", "sample name 'bad name'",
                     "n_domains '1': the number of domains must be a whole number of at least 2",
                     "method 'spami' needs a second omics", "refine 'maybe' is not one of auto, yes, no",
                     "preset 'cells' does not apply to method 'spotscape' (its presets: default)",
                     "refine does not apply to method 'precomputed'"):
        assert expected in message, expected
    assert "method staig" not in message  # STAIG's preset cells, refined: valid
    assert main(["batch", str(sheet), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()  # validated before any work
    sheet.write_text("sample,input,n_markers\nA,ok.h5ad,2\nB,ok.h5ad,0\n")
    with pytest.raises(InputError, match=r"line 3 \(B\): n_markers '0': show at least 1 marker gene per domain"):
        batch.read_samplesheet(sheet)  # a report option is a column with no code of the samplesheet's own
    sheet.write_text("sample,input,n_markers,tau,epochs,gene_selection\nA,ok.h5ad,2,2.5,40,mvp\n")
    request = batch.read_samplesheet(sheet)[0]  # a method's settings are columns too, parsed by their types
    assert request.n_markers == 2
    assert dict(request.model_options) == {"tau": 2.5, "n_epochs": 40, "gene_selection": "mvp"}


@pytest.mark.skipif(shutil.which("snakemake") is None and not Path(sys.executable).with_name("snakemake").exists(),
                    reason="snakemake is not installed (pip install 'spatialdomains[workflow]')")
def test_snakemake_workflow_runs_the_same_per_sample_step_as_the_batch_command(tmp_path):
    """A small sample through the Snakemake workflow: the batch command's per-sample step, same parameters."""
    sd.io.write_h5ad(sd.datasets.simulate_visium(300, 3, seed=13), tmp_path / "S.h5ad")
    sheet = tmp_path / "one.csv"
    sheet.write_text(f"sample,input,method,n_domains,epochs\nS,{tmp_path / 'S.h5ad'},staig,3,30\n")
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    out = tmp_path / "reports"
    run = subprocess.run([snakemake, "-s", str(sd.report.render.workflow_path()), "--cores", "2", "--config",
                          f"samplesheet={sheet}", f"out={out}", "engine=fallback"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert batch.read_status(out / "S")["status"] == "ok"
    assert (out / "S" / batch.REPORT_FILE).is_file()
    assert "1 of 1 samples reported" in (out / batch.INDEX_FILE).read_text()
    # the batch command's per-sample step ran, with the parameters the batch command reads from the sheet
    expected = batch.fingerprint(batch.read_samplesheet(sheet, engine="fallback")[0])
    assert batch.read_status(out / "S")["fingerprint"] == json.loads(json.dumps(expected, default=str))
    assert sd.metrics.ari(pd.read_csv(out / "S" / "domains.csv", index_col="barcode")["domain"],
                          sd.io.read(tmp_path / "S.h5ad").obs["ground_truth"]) > 0.3  # 30 epochs: real domains


def test_a_status_written_by_an_older_version_is_read_in_todays_form(tmp_path):
    """Older statuses kept epochs and preset as columns of their own and refine as its word: read in today's form,
    an unchanged sample is still skipped, and a changed setting is still named."""
    sd.io.write_h5ad(sd.datasets.simulate_visium(200, 3, seed=1), tmp_path / "S.h5ad")
    sheet = tmp_path / "one.csv"
    sheet.write_text(f"sample,input,n_domains,epochs,preset,refine\nS,{tmp_path / 'S.h5ad'},3,30,cells,no\n")
    request = batch.read_samplesheet(sheet)[0]
    today = batch.fingerprint(request)
    old = {"sample": "S", "inputs": [str(tmp_path / "S.h5ad")], "method": "staig", "n_domains": 3,
           "species": "auto", "gene_sets": None, "image": None, "image_scale": 1.0, "seed": 0, "epochs": 30,
           "modalities": {}, "label_key": None, "condition_key": None, "preset": "cells", "refine": "no",
           "engine": "auto"}
    folder = tmp_path / "out" / "S"
    folder.mkdir(parents=True)
    (folder / batch.REPORT_FILE).write_text("<html></html>")
    status = {"status": "ok", "fingerprint": {"parameters": old, "inputs": today["inputs"]}}
    assert batch._changes(folder, status, json.loads(json.dumps(today))) == []
    status["fingerprint"]["parameters"] = {**old, "epochs": 20}
    assert batch._changes(folder, status, json.loads(json.dumps(today))) == ["epochs 20 → 30"]
