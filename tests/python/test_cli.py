import json
import subprocess
import sys

import pandas as pd

import spatialdomains as sd
from conftest import write_space_ranger
from spatialdomains import cli


def _run(*args):
    return subprocess.run([sys.executable, "-m", "spatialdomains.cli", *args], capture_output=True, text=True)


def test_run_end_to_end_on_an_h5ad(sample, tmp_path):
    sample.write_h5ad(tmp_path / "sample.h5ad")
    out = tmp_path / "out"
    code = cli.main(["run", str(tmp_path / "sample.h5ad"), "--n-domains", "3", "--out", str(out), "--epochs", "30",
                     "--cluster-method", "gmm", "--label-key", "ground_truth", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.OUTPUT_FILES.values())
    domains = pd.read_csv(out / "domains.csv", index_col="barcode")
    assert list(domains.index) == list(sample.obs_names)
    assert set(domains.columns) == {"domain", "domain_unrefined", "x", "y"}
    embedding = pd.read_csv(out / "embedding.csv", index_col="barcode")
    assert embedding.shape == (sample.n_obs, 64)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["staig"]["parameters"]["n_epochs"] == 30
    assert provenance["scores"]["label_key"] == "ground_truth" and 0 <= provenance["scores"]["refined"]["ari"] <= 1
    result = sd.io.read(out / "result.h5ad")
    assert result.obs["domain"].notna().all()


def test_run_on_a_space_ranger_folder(sample, tmp_path):
    write_space_ranger(sample, tmp_path / "outs")
    code = cli.main(["run", str(tmp_path), "--n-domains", "3", "--out", str(tmp_path / "out"), "--epochs", "5",
                     "--cluster-method", "kmeans", "--quiet"])
    assert code == 0 and (tmp_path / "out" / "domains.png").exists()


def test_bad_input_gives_a_message_and_exit_code(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nothing.h5ad"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_label_key_fails_before_training(sample, tmp_path, capsys):
    sample.write_h5ad(tmp_path / "s.h5ad")
    code = cli.main(["run", str(tmp_path / "s.h5ad"), "--out", str(tmp_path / "o"), "--label-key", "nope", "--quiet"])
    assert code == 2 and "--label-key" in capsys.readouterr().err


def test_help_and_usage_errors():
    for args in (["--help"], ["run", "--help"], ["demo", "--help"]):
        result = _run(*args)
        assert result.returncode == 0 and "usage" in result.stdout
    assert _run().returncode == 2
    assert _run("run", "x.h5ad").returncode == 2  # --out missing
    assert "spatialdomains" in _run("--version").stdout


def test_demo_command_small(tmp_path):
    code = cli.main(["demo", "--out", str(tmp_path), "--n-spots", "300", "--n-domains", "3", "--epochs", "20",
                     "--cluster-method", "kmeans", "--quiet"])
    assert code == 0
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["scores"]["label_key"] == "ground_truth"
