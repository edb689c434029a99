"""The report command on one sample: precomputed domains, progress messages, several slices, paired omics, the
kernel's library path, gene symbols and the interactive map."""
from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest

import spatialdomains as sd
from spatialdomains.cli import main
from spatialdomains.errors import InputError

from conftest import chromium


def test_report_command_precomputed_domains_and_errors(tmp_path, capsys):
    adata = sd.datasets.simulate_visium(400, 3, seed=3)
    adata.obs["domain"] = adata.obs["ground_truth"]
    sd.io.write_h5ad(adata, tmp_path / "labelled.h5ad")
    page = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "labelled.h5ad"), "--out", str(page), "--method", "precomputed",
                 "--engine", "fallback", "--outputs-dir", str(tmp_path / "tables"), "--quiet"]) == 0
    assert page.is_file() and (tmp_path / "tables" / "markers.csv").is_file()
    assert oct(page.stat().st_mode & 0o044) == oct(0o044)  # readable by others, like any report
    with pytest.raises(InputError, match="refine does not apply to method='precomputed', which reports the domains"):
        sd.report.render_report(tmp_path / "labelled.h5ad", tmp_path / "y.html", method="precomputed", refine=True)
    with pytest.raises(InputError, match=r"preset='cells' does not apply to method='spotscape' \(its presets: default"):
        sd.report.render_report(tmp_path / "labelled.h5ad", tmp_path / "y.html", method="spotscape", preset="cells")
    assert not (tmp_path / "y.html").exists()
    adata.obs = adata.obs.drop(columns="domain")
    sd.io.write_h5ad(adata, tmp_path / "unlabelled.h5ad")
    assert main(["report", str(tmp_path / "unlabelled.h5ad"), "--out", str(tmp_path / "x.html"),
                 "--method", "precomputed", "--quiet"]) == 2
    assert "obs['domain']" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_report_command_shows_each_step_and_no_kernel_transport_warning(tmp_path, capfd):
    """Also: the report takes the run command's preset and refinement (a lattice, refined on 'auto', here not)."""
    adata = sd.datasets.simulate_visium(300, 3, seed=3)
    sd.io.write_h5ad(adata, tmp_path / "sample.h5ad")
    assert main(["report", str(tmp_path / "sample.h5ad"), "--out", str(tmp_path / "r.html"), "--n-domains", "3",
                 "--epochs", "3", "--engine", "fallback", "--preset", "cells", "--refine", "no", "--n-markers", "3",
                 "--outputs-dir", str(tmp_path / "tables")]) == 0
    printed = capfd.readouterr().err  # the kernel's own stderr, inherited from this process
    for step in ("sample: reading sample.h5ad", "STAIG: training on", "STAIG: 3/3 epochs", "ranking marker genes",
                 "GO enrichment"):
        assert step in printed, printed
    assert "without encryption" not in printed and "IProgress" not in printed and "Traceback" not in printed
    model = json.loads((tmp_path / "tables" / "provenance.json").read_text())["model"]
    assert model["staig"]["preset"] == "cells"
    assert (model["staig"]["parameters"]["n_neighbors"], model["staig"]["parameters"]["n_layers"]) == (8, 2)
    assert model["cluster"]["refined"] is False
    assert "domain_unrefined" not in pd.read_csv(tmp_path / "tables" / "domains.csv").columns
    page = (tmp_path / "r.html").read_text()  # the summary's run table says what ran
    assert "<td>settings preset</td><td>cells</td>" in page and "<td>refinement</td><td>none</td>" in page
    assert "Dot plot of the top 3 marker genes of each domain" in page  # --n-markers reached the section


def test_multi_slice_report_shows_integration_transfer_conditions_and_denoised_markers(tmp_path):
    """Two slices (control, disease), the first annotated: the report integrates them, annotates the second from
    the first, compares the conditions per domain and draws Spotscape's denoised markers."""
    tissue = sd.datasets.simulate_visium(600, 3, seed=21)  # dealt into two slices of the same tissue
    inputs = []
    for start, condition in ((0, "control"), (1, "disease")):
        part = tissue[start::2].copy()
        part.obs["condition"] = condition
        if condition == "disease":
            part.obs = part.obs.drop(columns="ground_truth")  # to be annotated from the control slice
        path = tmp_path / f"slice{21 + start}.h5ad"
        sd.io.write_h5ad(part, path)
        inputs.append(path)
    page_path = tmp_path / "joint.html"
    with pytest.raises(InputError, match="compares slices: give several inputs"):
        sd.report.render_report(inputs[:1], page_path, method="spotscape", condition_key="condition")
    with pytest.raises(InputError, match="slice 'slice21' has no obs\\['treatment'\\]"):
        sd.report.render_report(inputs, page_path, method="spotscape", condition_key="treatment")
    assert not page_path.exists()
    sd.report.render_report(inputs, page_path, method="spotscape", n_domains=3, epochs=30, engine="fallback",
                            outputs_dir=tmp_path / "tables", label_key="ground_truth", condition_key="condition")
    page = page_path.read_text()
    assert 'id="attention"' not in page  # not a SpaMI run
    section = page[page.index('id="integration"'):page.index('id="transfer"')]
    assert "integration scores" in section and "ilisi" in section
    assert section.count("data:image/png;base64,") == 1  # the composition per slice
    domains_section = page[page.index('id="domains"'):page.index('id="umap"')]
    assert domains_section.count("data:image/png;base64,") == 2  # one map per slice, each in its own frame
    transfer = page[page.index('id="transfer"'):page.index('id="conditions"')]
    assert "predicted from slice" in transfer and transfer.count("data:image/png;base64,") == 1
    conditions = page[page.index('id="conditions"'):page.index('id="provenance"')]
    assert "Wilcoxon" in conditions and "mean share of a slice's spots" in conditions
    denoised = page[page.index('id="denoised"'):page.index('id="deg-tables"')]
    assert denoised.count("data:image/png;base64,") == 1 and "decoder" in denoised
    result = sd.io.read_h5ad(tmp_path / "tables" / "result.h5ad")
    assert set(result.obs["slice"]) == {"slice21", "slice22"}
    predicted = result.obs["ground_truth_transferred"]
    assert predicted[result.obs["slice"] == "slice21"].isna().all()
    assert predicted[result.obs["slice"] == "slice22"].notna().all()
    provenance = json.loads((tmp_path / "tables" / "provenance.json").read_text())
    (scores,) = provenance["label_transfer"]
    assert scores["slice"] == "slice22" and scores["from slice"] == "slice21" and scores["annotated spots"] == 0
    refined = "majority vote of the 15 nearest spots" if provenance["model"]["cluster"]["refined"] else "none"
    assert f"<td>refinement</td><td>{refined}</td>" in page
    truth = tissue.obs["ground_truth"][1::2]
    assert sd.metrics.ari(truth, predicted[result.obs["slice"] == "slice22"].to_numpy()) > 0.3
    assert provenance["conditions"]["reference"] == "control" and provenance["conditions"]["tests"] == ["wilcoxon (spots)"]


def test_spami_report_shows_attention_and_explains_missing_go(tmp_path):
    mdata = sd.datasets.simulate_multiomics(300, 3, seed=1)
    path = tmp_path / "pair.h5mu"
    sd.io.write_h5mu(mdata, path)
    page_path = tmp_path / "pair.html"
    sd.report.render_report(path, page_path, method="spami", n_domains=3, epochs=50, engine="fallback")
    page = page_path.read_text()
    section = page[page.index('id="attention"'):page.index('id="provenance"')]
    assert section.count("data:image/png;base64,") == 1 and "Not a SpaMI run" not in section
    assert 'id="integration"' not in page  # one section
    go_section = page[page.index('id="go"'):page.index('id="attention"')]
    # Simulated gene names are not real IDs: the report says why GO did not run instead of failing.
    assert "GO enrichment was not run" in go_section and "gene-ID type" in go_section


def test_report_kernel_survives_system_library_path(tmp_path, monkeypatch):
    """After R started in this process (rpy2 sets LD_LIBRARY_PATH to R's and the system's library folders), a
    kernel could load another build's libpython; the report must still run."""
    monkeypatch.setenv("LD_LIBRARY_PATH", os.pathsep.join(["/usr/lib/R/lib", "/usr/lib/x86_64-linux-gnu"]))
    sd.io.write_h5ad(sd.datasets.simulate_visium(300, 3, seed=3), tmp_path / "sample.h5ad")
    # Training imports torch_geometric, which imports ssl: the first extension module that needs the right libpython.
    page = sd.report.render_report(tmp_path / "sample.h5ad", tmp_path / "r.html", n_domains=3, epochs=30,
                                   engine="fallback")
    assert page.is_file()


def test_ensembl_input_shows_symbols_in_every_table_and_plot(tmp_path):
    import matplotlib.pyplot as plt

    from spatialdomains import pl

    adata = sd.datasets.simulate_visium(500, 3, seed=4, var_names="gene_ids")  # Ensembl IDs, no symbol column
    assert adata.var_names.str.startswith("ENSG").mean() > 0.9
    adata.obs["domain"] = adata.obs["ground_truth"]
    sd.io.write_h5ad(adata, tmp_path / "ids.h5ad")
    assert main(["report", str(tmp_path / "ids.h5ad"), "--method", "precomputed", "--engine", "fallback",
                 "--out", str(tmp_path / "r.html"), "--outputs-dir", str(tmp_path / "out"), "--quiet"]) == 0
    markers = pd.read_csv(tmp_path / "out" / "markers.csv")
    assert markers["gene"].str.startswith("ENSG").mean() > 0.9  # the ID, as in the data
    assert not markers["symbol"].str.startswith("ENSG").any()  # each ID looked up in org.Hs.eg.db
    assert {"MBP", "SOX10"} <= set(markers["symbol"])
    go = pd.read_csv(tmp_path / "out" / "go_enrichment.csv")
    assert len(go) and not go["geneSymbols"].str.contains("ENSG00000197971").any()  # MBP's ID, shown as MBP
    page = (tmp_path / "r.html").read_text()
    assert "<td>MBP</td>" in page
    for figure in (pl.marker_dotplot(adata, markers), pl.marker_heatmap(adata, markers), pl.volcano(markers)):
        labels = [t.get_text() for ax in figure.axes for t in ax.get_xticklabels() + ax.texts]
        assert labels and not any(label.startswith("ENSG") for label in labels), labels[:5]
        plt.close(figure)


_MAP_PROBE = """<script type="module">
await new Promise(done => setTimeout(done, 300));
const canvas = document.querySelector(".spot-map canvas");
const rect = canvas.getBoundingClientRect();
const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let coloured = 0;
for (let i = 0; i < pixels.length; i += 4) { if (pixels[i + 3] > 0) coloured++; }
document.body.dataset.colouredPixels = coloured;
for (const [fx, fy] of [[0.5, 0.5], [0.3, 0.3], [0.7, 0.6]]) {
  canvas.dispatchEvent(new MouseEvent("mousemove", {clientX: rect.left + fx * rect.width,
                                                    clientY: rect.top + fy * rect.height}));
  const tip = document.querySelector(".spot-map-tip");
  if (tip.style.display === "block") { document.body.dataset.tip = tip.textContent; break; }
}
</script>"""


def test_small_samples_get_a_domain_map_to_zoom_and_hover(tmp_path):
    import html as html_module
    import re

    browser = chromium()
    adata = sd.datasets.simulate_visium(300, 3, seed=6)
    adata.obs["domain"] = adata.obs["ground_truth"]
    sd.io.write_h5ad(adata, tmp_path / "small.h5ad")
    assert main(["report", str(tmp_path / "small.h5ad"), "--method", "precomputed", "--engine", "fallback",
                 "--label-key", "ground_truth", "--out", str(tmp_path / "r.html"), "--quiet"]) == 0
    probe = tmp_path / "probe.html"
    probe.write_text((tmp_path / "r.html").read_text().replace("</body>", _MAP_PROBE + "</body>"))
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    body = run.stdout[run.stdout.index("<body"):run.stdout.index(">", run.stdout.index("<body"))]
    found = {k: html_module.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body)}
    assert int(found["coloured-pixels"]) > 10_000  # the spots are drawn
    assert re.match(r"spot\d+-1: domain D\d, ground_truth D\d", found["tip"]), found["tip"]


def test_large_samples_keep_the_static_map_only(monkeypatch):
    from spatialdomains.report import sections

    shown = []
    monkeypatch.setattr(sections, "INTERACTIVE_MAP_LIMIT", 100)
    monkeypatch.setattr("IPython.display.display", lambda item, **kwargs: shown.append(item))
    adata = sd.datasets.simulate_visium(300, 3, seed=6)
    adata.obs["domain"] = adata.obs["ground_truth"]
    result = sd.report.sample.SampleResult(adata=adata, markers=pd.DataFrame(), go=pd.DataFrame(), record={})
    sections.interactive_map(result)
    assert len(shown) == 1 and "static map only" in shown[0].data and "spot-map" not in shown[0].data


def test_an_annotation_in_one_modality_of_paired_omics_is_found(tmp_path):
    mdata = sd.datasets.simulate_multiomics(300, 3, seed=2)
    rna, adt = mdata["rna"].copy(), mdata["adt"].copy()
    rna.obs["region"] = rna.obs["ground_truth"]  # the annotation is in the RNA file only
    sd.io.write_h5ad(rna, tmp_path / "rna.h5ad")
    sd.io.write_h5ad(adt, tmp_path / "adt.h5ad")
    result = sd.report.sample.analyse(tmp_path / "rna.h5ad", method="spami", modalities={"adt": tmp_path / "adt.h5ad"},
                                      n_domains=3, epochs=5, engine="fallback", label_key="region")
    assert result.label_key == "region" and "ari" in result.record["annotation"]
    with pytest.raises(sd.errors.InputError, match=r"obs\['nowhere'\] does not exist"):
        sd.report.sample.analyse(tmp_path / "rna.h5ad", method="spami", modalities={"adt": tmp_path / "adt.h5ad"},
                                 n_domains=3, epochs=5, engine="fallback", label_key="nowhere")
