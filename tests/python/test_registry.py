"""A method is one module: registered (or declared as an entry point of another package), every door offers and
runs it with no other file edited; and run and report write the same domains from the same input and seed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

import spatialdomains as sd
from spatialdomains import cli, methods
from spatialdomains.errors import InputError

TOY = Path(__file__).parents[1] / "testthat" / "toy_spatial_method.py"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The toy method installed as another package would install it: its module and a dist-info folder that
    declares it under the ``spatialdomains.methods`` entry points, on PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(TOY, site / TOY.name)
    info = site / "toy_spatial_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-spatial-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{methods.ENTRY_POINT_GROUP}]\ntoy = toy_spatial_method:Toy\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    data = tmp_path_factory.mktemp("data")
    sd.io.write_h5ad(sd.datasets.simulate_visium(400, 3, seed=3), data / "sample.h5ad")
    return {"env": env, "sample": data / "sample.h5ad"}


def _command(plugin, *arguments, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spatialdomains.cli", *arguments], env=plugin["env"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_an_installed_method_is_offered_and_run_by_every_command(plugin, tmp_path):
    helped = _command(plugin, "run", "--help", cwd=tmp_path)
    assert "toy" in helped.stdout and "wide" in helped.stdout  # its name and its preset, from the registry
    common = ["--method", "toy", "--preset", "wide", "--n-domains", "3", "--seed", "0", "--threads", "1", "--quiet"]
    run = _command(plugin, "run", str(plugin["sample"]), "--out", "run", *common, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    record = sd.io.read(tmp_path / "run" / "result.h5ad").uns["spatialdomains"]
    assert record["toy"]["preset"] == "wide" and record["toy"]["parameters"]["n_neighbors"] == 12
    assert record["cluster"]["backend"].startswith("k")  # its own clusterer, k-means, on cluster_method 'auto'
    sheet = tmp_path / "sheet.csv"  # the batch renders the sample's report: the report's door too
    sheet.write_text(f"sample,input,method,preset,n_domains,seed\nS,{plugin['sample']},toy,wide,3,0\n")
    batch = _command(plugin, "batch", str(sheet), "--out", "batch", "--engine", "fallback", "--threads", "1",
                     "--quiet", cwd=tmp_path)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert 'id="denoised"' in (tmp_path / "batch" / "S" / "report.html").read_text()  # its decoder's markers
    assert (tmp_path / "run" / "domains.csv").read_bytes() == (tmp_path / "batch" / "S" / "domains.csv").read_bytes()
    provenance = sd.io.read(tmp_path / "batch" / "S" / "result.h5ad").uns["spatialdomains"]["toy"]
    assert provenance["preset"] == "wide" and provenance["parameters"]["n_neighbors"] == 12


def test_a_method_a_door_does_not_know_is_refused_with_the_choices(plugin, tmp_path):
    wrong = _command(plugin, "report", str(plugin["sample"]), "--out", "r.html", "--method", "toy", "--tau", "2",
                     cwd=tmp_path)
    assert wrong.returncode == 2 and "--tau does not apply to --method toy" in wrong.stderr
    assert not (tmp_path / "r.html").exists()
    preset = _command(plugin, "run", str(plugin["sample"]), "--out", "o", "--method", "toy", "--preset", "cells",
                      cwd=tmp_path)
    assert preset.returncode == 2 and "(its presets: default, wide)" in preset.stderr


def test_registering_a_method_makes_it_known_to_the_registry_the_r_bridge_and_reports(tmp_path):
    sys.path.insert(0, str(TOY.parent))
    try:
        import toy_spatial_method
    finally:
        sys.path.remove(str(TOY.parent))
    before = methods.names()
    try:
        methods.register(toy_spatial_method.Toy())
        from spatialdomains import bridge

        info = bridge.method_info()["methods"]["toy"]
        assert info["presets"] == ["default", "wide"] and info["decodes"] and info["cluster_auto"] == "kmeans"
        assert "toy" in sd.report.report_methods()
        adata = sd.datasets.simulate_visium(300, 3, seed=1)
        imputed = sd.tl.impute(adata, method="toy")  # its decoder, through the one imputation path
        assert imputed.n_vars == 60 and imputed.layers["observed"].shape == imputed.shape
        # a report runs in a process of its own, which loads the method from the file of its class
        sd.io.write_h5ad(adata, tmp_path / "s.h5ad")
        sd.report.render_report(tmp_path / "s.h5ad", tmp_path / "r.html", method="toy", preset="wide",
                                n_domains=3, engine="fallback", outputs_dir=tmp_path / "tables")
        assert json.loads((tmp_path / "tables" / "provenance.json").read_text())["model"]["toy"]["preset"] == "wide"
        sys.modules["typed_in_a_cell"] = types.ModuleType("typed_in_a_cell")  # a module with no file
        unfiled = type("Unfiled", (toy_spatial_method.Toy,), {"name": "unfiled", "__module__": "typed_in_a_cell"})
        methods.register(unfiled())
        with pytest.raises(InputError, match="registered in this session from code that is in no file"):
            sd.report.render_report(tmp_path / "s.h5ad", tmp_path / "u.html", method="unfiled")
    finally:
        for name in ("toy", "unfiled"):
            methods._REGISTRY.pop(name, None)
            methods._SESSION.pop(name, None)
        sys.modules.pop("typed_in_a_cell", None)
    assert methods.names() == before


def test_run_and_report_write_the_same_domains(tmp_path):
    """One input, seed and options through both commands: byte-identical domains.csv (STAIG, one thread)."""
    sd.io.write_h5ad(sd.datasets.simulate_visium(350, 3, seed=5), tmp_path / "s.h5ad")
    common = ["--n-domains", "3", "--epochs", "15", "--seed", "2", "--threads", "1", "--quiet"]
    assert cli.main(["run", str(tmp_path / "s.h5ad"), "--out", str(tmp_path / "run"), *common]) == 0
    assert cli.main(["report", str(tmp_path / "s.h5ad"), "--out", str(tmp_path / "r.html"), "--outputs-dir",
                     str(tmp_path / "report"), "--engine", "fallback", *common]) == 0
    ran, reported = (tmp_path / "run" / "domains.csv"), (tmp_path / "report" / "domains.csv")
    assert ran.read_bytes() == reported.read_bytes()
    assert pd.read_csv(ran)["domain"].nunique() == 3
    for name in ("embedding.csv", "domains.png", "provenance.json", "result.h5ad"):  # one writer: the same files
        assert (tmp_path / "report" / name).is_file(), name
