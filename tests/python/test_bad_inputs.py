"""Bad inputs and faults, one row each, as a hostile but ordinary user would try them from the command line.

Every row says how to make the case, the exit code, the words the message must contain, and whether training
may start. Each case also checks what every case must: no traceback, the user's files byte-for-byte unchanged,
and, when the command fails, nothing new left behind (no partial output, no hidden staging folder). Training is
made to fail loudly in the cases that must be refused before it starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
import pytest

import spatialdomains as sd
from conftest import write_space_ranger
from tenx_layouts import write_visium_hd, write_xenium
from spatialdomains import cli, methods
from spatialdomains.outputs import MARKER, REPORT_TAG

N_SPOTS = 300


@pytest.fixture(scope="module")
def base():
    return sd.datasets.simulate_visium(N_SPOTS, 3, seed=5)


@dataclass
class Case:
    id: str
    make: Callable  # (folder, base) -> argv
    code: int
    words: tuple = ()
    trains: bool = False  # training may start (the case is expected to run)
    absent: tuple = ()  # words the output must not contain
    after: Callable | None = None  # (folder, base) -> None: further checks after the command
    notes: dict = field(default_factory=dict)


def h5ad(folder: Path, base, change=None, name: str = "sample.h5ad") -> str:
    adata = base.copy()
    if change is not None:
        change(adata)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return str(path)


def space_ranger(folder: Path, base, change) -> str:
    outs = write_space_ranger(base, folder / "sr" / "outs")
    change(outs)
    return str(outs.parent)


def _cells():
    return sd.datasets.simulate_cells(600, 3, 4, 60, seed=5)


def visium_hd(folder: Path, change=None) -> str:
    """A Visium HD run folder (8 and 16 µm bins, segmented cells), changed by ``change(outs)``."""
    outs = folder / "hd" / "outs"
    write_visium_hd(_cells(), outs)
    if change is not None:
        change(outs)
    return str(outs.parent)


def xenium(folder: Path, change=None) -> str:
    bundle = write_xenium(_cells(), folder / "xenium")
    if change is not None:
        change(bundle)
    return str(bundle)


def _bins_positions(change):
    """Rewrite the 8 µm bins' tissue_positions.parquet through ``change(table)``."""
    def rewrite(outs: Path):
        path = outs / "binned_outputs" / "square_008um" / "spatial" / "tissue_positions.parquet"
        change(pd.read_parquet(path)).to_parquet(path, index=False)
    return rewrite


def _xenium_cells(change):
    def rewrite(bundle: Path):
        path = bundle / "cells.parquet"
        change(pd.read_parquet(path)).to_parquet(path, index=False)
    return rewrite


def _clusters_match_domains(folder: Path, base) -> None:
    """clusters.csv lists every spot with a domain, under the header its viewer imports."""
    out = folder / "out"
    clusters, domains = pd.read_csv(out / "clusters.csv", dtype=str), pd.read_csv(out / "domains.csv", dtype=str)
    header = ["cell_id", "group"] if "xenium" in json.loads((out / MARKER).read_text())["inputs"][0] else \
        ["Barcode", "domain"]
    assert list(clusters.columns) == header
    if domains["barcode"].str.startswith("s_016um_").all():  # Loupe's file is the 8 µm bins': each takes its 16 µm bin's
        parents = dict(zip(domains["barcode"].str[8:19], domains["domain"]))
        for barcode, domain in zip(clusters["Barcode"], clusters["domain"]):
            row, col = int(barcode[8:13]), int(barcode[14:19])
            assert barcode.startswith("s_008um_") and parents[f"{row // 2:05d}_{col // 2:05d}"] == domain
        return
    assert list(clusters.iloc[:, 0]) == list(domains["barcode"]) and list(clusters.iloc[:, 1]) == list(domains["domain"])


def earlier_run(folder: Path, *extra: str) -> Path:
    """A folder holding an earlier run's results (its marker and a file)."""
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"command": "run", "method": "staig", "inputs": ["/old/input.h5ad"],
                                             "created": "2026-11-30 10:00:00"}))
    for name in ("domains.csv", *extra):
        (folder / name).write_text("barcode,domain\n")
    return folder


def with_coordinates(values):
    def change(adata):
        adata.obsm["spatial"] = values(adata)
    return change


def _feature_types(kind: str):
    def change(outs: Path):
        with h5py.File(outs / "filtered_feature_bc_matrix.h5", "a") as handle:
            features = handle["matrix/features"]
            n = len(features["feature_type"])
            del features["feature_type"]
            features["feature_type"] = np.array([kind.encode()] * n)
    return change


def _run(folder, base, *flags, change=None):
    return ["run", h5ad(folder, base, change), "--out", str(folder / "out"), *flags]


def _sheet(folder: Path, text: str) -> str:
    sheet = folder / "samples.csv"
    sheet.write_text(text)
    return str(sheet)


def _paired(folder: Path, base, n_second: int) -> list[str]:
    mdata = sd.datasets.simulate_multiomics(N_SPOTS, 3, second="adt", seed=5)
    rna, adt = folder / "RNA.h5ad", folder / "ADT.h5ad"
    mdata["rna"].write_h5ad(rna)
    mdata["adt"][:n_second].copy().write_h5ad(adt)
    return ["run", "--method", "spami", "--modality", f"rna={rna}", "--modality", f"adt={adt}", "--out",
            str(folder / "out"), "--epochs", "2", "--n-domains", "3"]


def _h5mu(folder: Path) -> str:
    path = folder / "pair.h5mu"
    sd.datasets.simulate_multiomics(N_SPOTS, 3, second="adt", seed=5).write(path)
    return str(path)


def _domains_have_coordinates(folder: Path, base) -> None:
    table = pd.read_csv(folder / "out" / "domains.csv", index_col=0)
    assert {"x", "y", "domain"} <= set(table.columns) and len(table) == base.n_obs
    assert np.allclose(table[["x", "y"]].to_numpy(), base.obsm["spatial"])


def _earlier_run_replaced(folder: Path, base) -> None:
    out = folder / "out"
    assert not (out / "old_file.csv").exists() and (out / "result.h5ad").is_file()
    assert "sample.h5ad" in (out / MARKER).read_text()


def _partial_pair_documented(folder: Path, base) -> None:
    table = pd.read_csv(folder / "out" / "domains.csv", index_col=0)
    n_rna = sd.io.read_h5ad(folder / "RNA.h5ad").n_obs
    assert len(table) == n_rna and table["domain"].isna().sum() == n_rna - 200  # left out: no domain


def _labelled(adata):
    adata.obs["domain"] = adata.obs["ground_truth"]


CASES = [
    # Data loss and mixed outputs
    Case("report --out is the input", lambda f, b: ["report", h5ad(f, b, _labelled), "--out", str(f / "sample.h5ad"),
                                                    "--method", "precomputed"], 2, ("is the input", "another output")),
    Case("run --out holds the input", lambda f, b: ["run", h5ad(f, b, name="D/result.h5ad"), "--out", str(f / "D")], 2,
         ("contains the input", "replace your data")),
    Case("run --out holds an earlier run", lambda f, b: ["run", h5ad(f, b), "--out", str(earlier_run(f / "old"))],
         2, ("earlier run", "--force")),
    Case("run --out holds the user's files", lambda f, b: ["run", h5ad(f, b), "--out",
                                                           str(_user_folder(f))], 2, ("did not write", "notes.txt")),
    Case("run --force never replaces the user's files",
         lambda f, b: ["run", h5ad(f, b), "--out", str(_user_folder(f)), "--force"], 2, ("did not write",)),
    Case("run --force replaces an earlier run as a whole",
         lambda f, b: ["run", h5ad(f, b), "--out", str(earlier_run(f / "out", "old_file.csv")), "--force",
                       "--epochs", "2", "--n-domains", "3", "--quiet"], 0, trains=True, after=_earlier_run_replaced),
    Case("run --out is an existing file", lambda f, b: ["run", h5ad(f, b), "--out", h5ad(f, b, name="other.h5ad")],
         2, ("existing file", "folder")),
    Case("report --out is a folder", lambda f, b: ["report", h5ad(f, b, _labelled), "--method", "precomputed",
                                                   "--out", str(earlier_run(f / "old"))], 2, ("is a folder",)),
    Case("report --out is an earlier report", lambda f, b: ["report", h5ad(f, b, _labelled), "--method",
                                                            "precomputed", "--out", _old_report(f)], 2,
         ("already exists", "--force")),
    Case("report --force never replaces another file", lambda f, b: ["report", h5ad(f, b, _labelled), "--method",
                                                                     "precomputed", "--out", _notes(f), "--force"],
         2, ("not a spatialdomains report",)),
    Case("report --outputs-dir holds the user's files",
         lambda f, b: ["report", h5ad(f, b, _labelled), "--method", "precomputed", "--out", str(f / "r.html"),
                       "--outputs-dir", str(_user_folder(f))], 2, ("--outputs-dir", "did not write")),
    # Degenerate coordinates
    Case("all spots at one position", lambda f, b: _run(f, b, change=with_coordinates(
        lambda a: np.full((a.n_obs, 2), 5.0))), 2, ("same position", "obsm['spatial']")),
    Case("too few distinct positions", lambda f, b: _run(f, b, change=with_coordinates(
        lambda a: np.repeat([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]], -(-a.n_obs // 3), axis=0)[:a.n_obs])), 2,
         ("only 3 distinct positions",)),
    Case("a varying third coordinate", lambda f, b: _run(f, b, change=with_coordinates(
        lambda a: np.column_stack([a.obsm["spatial"], np.arange(a.n_obs)]))), 2, ("third varies", "[:, :2]")),
    Case("a constant third coordinate is accepted", lambda f, b: _run(f, b, "--epochs", "2", "--n-domains", "3",
                                                                      "--quiet", change=with_coordinates(
        lambda a: np.column_stack([a.obsm["spatial"], np.zeros(a.n_obs)]))), 0, trains=True),
    Case("obsm['spatial'] as a DataFrame", lambda f, b: _run(f, b, "--epochs", "2", "--n-domains", "3", "--quiet",
                                                             change=with_coordinates(lambda a: pd.DataFrame(
        a.obsm["spatial"], index=a.obs_names, columns=["x", "y"]))), 0, trains=True, after=_domains_have_coordinates),
    Case("no coordinates", lambda f, b: _run(f, b, change=lambda a: a.obsm.pop("spatial")), 2,
         ("obsm['spatial'] is missing",)),
    # Space Ranger folders
    Case("Space Ranger image is not a PNG", lambda f, b: ["run", space_ranger(f, b, lambda o: (
        o / "spatial" / "tissue_lowres_image.png").write_text("not a picture")), "--out", str(f / "out")], 2,
         ("not a readable PNG", "tissue_lowres_image.png")),
    Case("Space Ranger scale factors are corrupt", lambda f, b: ["run", space_ranger(f, b, lambda o: (
        o / "spatial" / "scalefactors_json.json").write_text("{\"spot_diameter")), "--out", str(f / "out")], 2,
         ("not valid JSON", "scalefactors_json.json")),
    Case("Space Ranger matrix is empty", lambda f, b: ["run", space_ranger(f, b, lambda o: (
        o / "filtered_feature_bc_matrix.h5").write_bytes(b"")), "--out", str(f / "out")], 2,
         ("not a readable 10x feature-barcode matrix",)),
    Case("Space Ranger matrix without Gene Expression", lambda f, b: ["run", space_ranger(
        f, b, _feature_types("Antibody Capture")), "--out", str(f / "out")], 2,
         ("no 'Gene Expression' features", "Antibody Capture")),
    Case("Space Ranger folder without positions", lambda f, b: ["run", space_ranger(f, b, lambda o: (
        o / "spatial" / "tissue_positions.csv").unlink()), "--out", str(f / "out")], 2, ("tissue_positions",)),
    # Visium HD and Xenium output folders
    Case("Visium HD at 16 µm", lambda f, b: ["run", visium_hd(f), "--bin-size", "16", "--out", str(f / "out"),
                                             "--epochs", "2", "--n-domains", "3", "--quiet"], 0, trains=True,
         after=_clusters_match_domains),
    Case("Xenium folder", lambda f, b: ["run", xenium(f), "--out", str(f / "out"), "--method", "spotscape", "--epochs",
                                        "2", "--n-domains", "3", "--quiet"], 0, trains=True,
         after=_clusters_match_domains),
    Case("Visium HD without tissue_positions.parquet", lambda f, b: ["run", visium_hd(f, lambda o: (
        o / "binned_outputs" / "square_008um" / "spatial" / "tissue_positions.parquet").unlink()), "--out",
        str(f / "out")], 2, ("no spatial/tissue_positions.parquet", "square_008um")),
    Case("Visium HD positions with wrong columns", lambda f, b: ["run", visium_hd(f, _bins_positions(
        lambda t: t.drop(columns="pxl_row_in_fullres"))), "--out", str(f / "out")], 2,
         ("lacks the column(s) pxl_row_in_fullres", "tissue_positions.parquet")),
    Case("Visium HD positions from another run", lambda f, b: ["run", visium_hd(f, _bins_positions(
        lambda t: t.iloc[5:])), "--out", str(f / "out")], 2, ("5 of the", "not in the tissue positions file")),
    Case("Visium HD positions file is corrupt", lambda f, b: ["run", visium_hd(f, lambda o: (
        o / "binned_outputs" / "square_008um" / "spatial" / "tissue_positions.parquet").write_text("barcode,x\n")),
        "--out", str(f / "out")], 2, ("not a readable Parquet file", "tissue_positions.parquet")),
    Case("--bin-size unknown", lambda f, b: ["run", visium_hd(f), "--bin-size", "5um2", "--out", str(f / "out")], 2,
         ("--bin-size 5um2 is not a Visium HD bin size", "2, 8, 16 or a custom size")),
    Case("--bin-size not in the run", lambda f, b: ["run", visium_hd(f), "--bin-size", "2", "--out", str(f / "out")],
         2, ("no 2 µm bins", "bin sizes present: 8, 16")),
    Case("Visium HD cells without outlines", lambda f, b: ["run", visium_hd(f, lambda o: (
        o / "segmented_outputs" / "cell_segmentations.geojson").unlink()), "--bin-size", "cells", "--out",
        str(f / "out")], 2, ("no cell_segmentations.geojson",)),
    Case("--bin-size on a Xenium folder", lambda f, b: ["run", xenium(f), "--bin-size", "8", "--out", str(f / "out")],
         2, ("--bin-size applies to Visium HD", "a Xenium folder")),
    Case("Xenium folder without cells", lambda f, b: ["run", xenium(f, lambda x: (x / "cells.parquet").unlink()),
                                                      "--out", str(f / "out")], 2,
         ("no cells table", "cells.parquet or cells.csv.gz")),
    Case("Xenium cells without centroids", lambda f, b: ["run", xenium(f, _xenium_cells(
        lambda t: t.drop(columns=["x_centroid"]))), "--out", str(f / "out")], 2,
         ("cells.parquet", "lacks the column(s) x_centroid")),
    Case("Xenium cells from another region", lambda f, b: ["run", xenium(f, _xenium_cells(
        lambda t: t.assign(cell_id=t["cell_id"] + "x"))), "--out", str(f / "out")], 2,
         ("600 of the 600 cells", "not in", "cells.parquet")),
    Case("Xenium folder without a matrix", lambda f, b: ["run", xenium(f, lambda x: (
        x / "cell_feature_matrix.h5").unlink()), "--out", str(f / "out")], 2,
         ("neither cell_feature_matrix.h5 nor cell_feature_matrix/",)),
    Case("a folder of another kind", lambda f, b: ["run", str(_user_folder(f, "notes")), "--out", str(f / "out")], 2,
         ("is not an output folder this package reads",)),
    # Samplesheets
    Case("samplesheet bin_size not in the run", lambda f, b: ["batch", _sheet(
        f, f"sample,input,bin_size\nA,{visium_hd(f)},2\n"), "--out", str(f / "out")], 2,
         ("line 2 (A)", "no 2 µm bins", "bin_size")),
    Case("empty samplesheet", lambda f, b: ["batch", _sheet(f, ""), "--out", str(f / "out")], 2, ("is empty",)),
    Case("samplesheet with a header only", lambda f, b: ["batch", _sheet(f, "sample,input\n"), "--out",
                                                          str(f / "out")], 2, ("no samples",)),
    Case("sample folder holds the user's files", lambda f, b: ["batch", _sheet(f, f"sample,input\nA,{h5ad(f, b)}\n"),
                                                               "--out", str(_user_folder(f / "out", "A").parent)], 2,
         ("sample 'A'", "did not write")),
    Case("sample folder holds its input", lambda f, b: ["batch", _sheet(f, "sample,input\nA,out/A/x.h5ad\n"),
                                                        "--out", str(f / "out")], 2, ("contains the input",),
         notes={"setup": lambda f, b: h5ad(f, b, name="out/A/x.h5ad")}),
    # Paired omics files
    Case("empty .h5mu file", lambda f, b: ["run", _empty(f / "x.h5mu"), "--method", "spami", "--out", str(f / "out")],
         2, ("not a readable .h5mu",)),
    Case(".h5mu without modalities", lambda f, b: ["run", _no_modalities(f), "--method", "spami", "--out",
                                                   str(f / "out")], 2, ("holds no modalities",)),
    Case(".h5mu with the default method", lambda f, b: ["run", _h5mu(f), "--out", str(f / "out")], 2,
         ("--method spami", "paired omics")),
    Case("paired omics with partial overlap", lambda f, b: _paired(f, b, 200), 0, ("not in every modality",),
         trains=True, after=_partial_pair_documented),
    # Devices
    Case("--device cuda without CUDA", lambda f, b: _run(f, b, "--device", "cuda"), 2, ("cuda",)),
    Case("--device unknown", lambda f, b: _run(f, b, "--device", "tpu"), 2, ("tpu",)),
    # Options, in the command line's words
    Case("--epochs 0", lambda f, b: _run(f, b, "--epochs", "0"), 2, ("--epochs 0", "at least 1"),
         absent=("StaigConfig", "n_epochs")),
    Case("--batch-size 0", lambda f, b: _run(f, b, "--batch-size", "0"), 2,
         ("--batch-size 0", "at least 1")),
    Case("--training minibatch for the baseline", lambda f, b: _run(f, b, "--method", "baseline", "--training",
                                                                    "minibatch"), 2,
         ("--training minibatch does not apply to Baseline: it trains no model", "leave --training unset")),
    Case("--n-domains 0", lambda f, b: _run(f, b, "--n-domains", "0"), 2, ("--n-domains 0", "at least 2")),
    Case("--n-domains -3", lambda f, b: _run(f, b, "--n-domains", "-3"), 2, ("--n-domains -3",)),
    Case("--n-domains 1", lambda f, b: _run(f, b, "--n-domains", "1"), 2, ("--n-domains 1",)),
    Case("--n-domains above the spots", lambda f, b: _run(f, b, "--n-domains", "5000"), 2,
         ("--n-domains 5000", "domains; choose fewer")),
    Case("report --method precomputed with a model's flags",
         lambda f, b: ["report", h5ad(f, b, _labelled), "--method", "precomputed", "--preset", "cells", "--refine",
                       "yes", "--out", str(f / "r.html")], 2,
         ("--preset, --refine do not apply to --method precomputed", "name a method to find the domains")),
    Case("report --n-domains 1", lambda f, b: ["report", h5ad(f, b), "--out", str(f / "r.html"), "--n-domains", "1"],
         2, ("--n-domains 1",)),
    Case("report --n-domains above the spots (found in the report's notebook)",
         lambda f, b: ["report", h5ad(f, b), "--out", str(f / "r.html"), "--n-domains", "5000"], 2,
         ("--n-domains 5000", "domains; choose fewer")),
    Case("normalised X names --layer", lambda f, b: _run(f, b, change=lambda a: setattr(a, "X", a.X / 3.3)), 2,
         ("--layer counts",), absent=("layer='counts'",)),
    Case("an option of another method", lambda f, b: _run(f, b, "--method", "spotscape", "--tau", "5"), 2,
         ("--tau",)),
    Case("a malformed --modality", lambda f, b: ["run", "--method", "spami", "--modality", "rna", "--out",
                                                 str(f / "out")], 2, ("NAME=VALUE",)),
    Case("--label-key that does not exist", lambda f, b: _run(f, b, "--label-key", "nope"), 2, ("--label-key",)),
    Case("report --label-key that does not exist (found in the report's notebook)", lambda f, b: [
        "report", h5ad(f, b), "--method", "precomputed", "--label-key", "nope", "--out",
        str(f / "new" / "report.html"), "--quiet"], 2, ("--label-key: obs['nope'] does not exist",)),
    # Inputs that were handled before: still handled
    Case("missing input", lambda f, b: ["run", str(f / "nothing.h5ad"), "--out", str(f / "out")], 2,
         ("does not exist",)),
    Case("unknown file type", lambda f, b: ["run", _empty(f / "counts.txt"), "--out", str(f / "out")], 2,
         ("unknown file type",)),
    Case("a corrupt .h5ad", lambda f, b: ["run", _empty(f / "broken.h5ad"), "--out", str(f / "out")], 2,
         ("not a readable .h5ad",)),
    Case("negative counts", lambda f, b: _run(f, b, change=lambda a: setattr(a, "X", -a.X)), 2, ("negative",)),
]


def _user_folder(parent: Path, name: str = "mine") -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    return folder


def _old_report(folder: Path) -> str:
    path = folder / "old.html"
    path.write_bytes(b"<!DOCTYPE html><html><head>" + REPORT_TAG + b"</head></html>")
    return str(path)


def _notes(folder: Path) -> str:
    path = folder / "notes.html"
    path.write_text("<html>my own page</html>")
    return str(path)


def _empty(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


def _no_modalities(folder: Path) -> str:
    import mudata

    path = folder / "empty.h5mu"
    mudata.MuData({}).write(path)
    return str(path)


def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones too), with the checksum of each file."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_training(monkeypatch):
    """Training that fails loudly: cases refused 'before training' must never reach it."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the error was found")

    for name in methods.names():
        monkeypatch.setattr(type(methods.get(name)), "train", refuse)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, base, tmp_path, capsys, caplog, request):
    if case.id == "--device cuda without CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA, so --device cuda is valid here")
    folder = tmp_path / "case"
    folder.mkdir()
    if "setup" in case.notes:
        case.notes["setup"](folder, base)
    argv = case.make(folder, base)
    if not case.trains:
        request.getfixturevalue("no_training")
    before = _tree(folder)
    code = cli.main(argv)  # an exception escaping here is a traceback for the user
    printed = capsys.readouterr()
    text = printed.out + printed.err + caplog.text  # warnings go through logging
    assert "Traceback" not in text
    assert code == case.code, text
    for word in case.words:
        assert word.lower() in text.lower(), f"{word!r} not in: {text}"
    for word in case.absent:
        assert word not in text, f"{word!r} in: {text}"
    after = _tree(folder)
    if code != 0:
        assert after == before, "a failed command changed or left files"
    else:
        out = "out" + os.sep
        kept = {path: digest for path, digest in before.items() if not path.startswith(out) and path != "out"}
        assert {path: after.get(path) for path in kept} == kept, "an input changed"
        assert not [p for p in after if ".partial-" in p or ".replaced-" in p], "staging left behind"
    if case.after is not None:
        case.after(folder, base)


def test_a_read_only_output_location_is_refused_before_any_work(base, tmp_path, capsys, no_training):
    mount = tmp_path / "read-only"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"a read-only file system cannot be mounted here (mount: {made.stderr.decode().strip()})")
    try:
        code = cli.main(["run", h5ad(tmp_path, base), "--out", str(mount / "out")])
        printed = capsys.readouterr()
        assert code == 2 and "read-only file system" in printed.err and "Traceback" not in printed.err
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _command(*args: str) -> list[str]:
    """The command line in a process of its own (which must load this Python's library even after R, started
    by an earlier test, put the system's library folders on LD_LIBRARY_PATH)."""
    from spatialdomains._utils import prefer_own_libpython

    prefer_own_libpython()
    return [sys.executable, "-m", "spatialdomains.cli", *args]


def test_a_full_disk_leaves_no_partial_output_and_no_crash(tmp_path):
    """Writing fails part-way (a file-size limit stands in for a full disk): exit 1 with a message, not a
    segmentation fault; the earlier results are left whole and no partial file remains."""
    out = earlier_run(tmp_path / "out", "old_file.csv")
    before = _tree(tmp_path)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    run = subprocess.run(_command("demo", "--out", str(out), "--n-spots", "600", "--epochs", "2", "--force",
                                  "--quiet"), capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "nothing was written there" in run.stderr, run.stderr
    assert "size limit" in run.stderr
    assert _tree(tmp_path) == before


def _wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_a_batch_promptly_and_writes_the_index(base, tmp_path, signal_number):
    inputs = [h5ad(tmp_path, base, name=f"{name}.h5ad") for name in ("A", "B")]
    sheet = _sheet(tmp_path, "sample,input,epochs\n" + "".join(f"{n},{p},2000\n" for n, p in zip("AB", inputs)))
    out = tmp_path / "out"
    process = subprocess.Popen(_command("batch", sheet, "--out", str(out), "--engine", "fallback", "--quiet"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = _wait_for(lambda: out.is_dir() and any(".partial-" in p.name for p in out.iterdir()), 120)
    assert started, "the first sample never started"
    time.sleep(3)  # its report kernel is running
    sent = time.monotonic()
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < 30, "the batch did not stop promptly"
    assert process.returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr and signal.Signals(signal_number).name in stderr
    index = (out / "index.html").read_text()
    assert "interrupted" in index and "0 of 2 samples reported" in index
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # no partial sample folder


def test_a_batch_redoes_a_sample_whose_input_or_parameters_changed(base, tmp_path, capsys, monkeypatch):
    """What is redone and what is skipped; the report step itself is stood in for (test_batch runs real ones)."""
    from spatialdomains.report import render

    source = h5ad(tmp_path, base, _labelled, name="A.h5ad")
    sheet = tmp_path / "samples.csv"
    out = tmp_path / "out"
    reported = []

    def report(inputs=None, out=None, *, request, outputs_dir, **rendering):
        reported.append((request.species, request.refine, dict(request.model_options) or None))
        out.write_text("<html></html>")
        (Path(outputs_dir) / "provenance.json").write_text(json.dumps({"n_domains": 3}))

    monkeypatch.setattr(render, "render_report", report)

    def batch(rows: str) -> str:
        sheet.write_text("sample,input,method,species,preset,refine\n" + rows)
        assert cli.main(["batch", str(sheet), "--out", str(out), "--engine", "fallback", "--quiet"]) == 0
        return capsys.readouterr().out

    assert "A: ok" in batch(f"A,{source},precomputed,human,,\n")
    status = json.loads((out / "A" / "status.json").read_text())
    assert status["fingerprint"]["inputs"][source]["size"] == Path(source).stat().st_size
    assert "A: skipped" in batch(f"A,{source},precomputed,human,,\n")
    assert "A: ok" in batch(f"A,{source},precomputed,auto,,\n")  # a parameter changed: redone
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # the input was replaced
    assert "A: ok" in batch(f"A,{source},precomputed,auto,,\n")
    assert "A: skipped" in batch(f"A,{source},precomputed,auto,,\n")
    status = json.loads((out / "A" / "status.json").read_text())
    for added in ("model_options", "refine", "cluster_method"):  # a status from before these: defaults, not redone
        del status["fingerprint"]["parameters"][added]
    (out / "A" / "status.json").write_text(json.dumps(status))
    assert "A: skipped" in batch(f"A,{source},precomputed,auto,,\n")
    assert "A: ok" in batch(f"A,{source},staig,auto,cells,yes\n")  # the preset and refinement reach the report
    assert reported == [("human", "auto", None), ("auto", "auto", None), ("auto", "auto", None),
                        ("auto", True, {"preset": "cells"})]


def test_ctrl_c_during_a_run_leaves_no_output(base, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(_command("run", h5ad(tmp_path, base), "--out", str(out), "--epochs", "100000",
                                        "--n-domains", "3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: False, 8) is False  # let it reach training
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "stopped by SIGINT" in stderr and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.h5ad"]


def test_a_killed_runs_staging_folder_is_swept_by_the_next_write(tmp_path):
    import socket

    from spatialdomains.outputs import Output

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True)
    dead = int(finished.stdout)
    leftover = tmp_path / f".out.partial-{socket.gethostname()}-{dead}-abc"
    leftover.mkdir()
    (leftover / "domains.csv").write_text("half")
    live = tmp_path / f".out.partial-{socket.gethostname()}-{os.getpid()}-xyz"  # a run still going
    live.mkdir()
    with Output(tmp_path / "out").writing() as folder:
        (folder / "domains.csv").write_text("whole")
    assert not leftover.exists() and live.exists()
    assert (tmp_path / "out" / "domains.csv").read_text() == "whole"


def test_files_that_appear_in_the_output_during_a_run_are_kept(tmp_path):
    from spatialdomains.errors import OutputFailed
    from spatialdomains.outputs import Output

    output = Output(tmp_path / "out")
    output.check()
    with pytest.raises(OutputFailed, match="changed during the run"):
        with output.writing() as folder:
            (folder / "domains.csv").write_text("results")
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "notes.txt").write_text("written meanwhile")
    assert (tmp_path / "out" / "notes.txt").read_text() == "written meanwhile"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.new-")]
    assert len(kept) == 1 and (kept[0] / "domains.csv").read_text() == "results"
