import json
import subprocess
import sys

import pandas as pd

import spatialdomains as sd
from conftest import write_space_ranger
from spatialdomains import cli
from spatialdomains.outputs import MARKER

#: What run writes for one sample (results.write_sample), besides clusters.csv of 10x inputs.
RUN_FILES = ["domains.csv", "embedding.csv", "domains.png", "provenance.json", "result.h5ad"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "spatialdomains.cli", *args], capture_output=True, text=True)


def test_run_end_to_end_on_an_h5ad(sample, tmp_path):
    sample.write_h5ad(tmp_path / "sample.h5ad")
    out = tmp_path / "out"
    code = cli.main(["run", str(tmp_path / "sample.h5ad"), "--n-domains", "3", "--out", str(out), "--epochs", "30",
                     "--cluster-method", "gmm", "--label-key", "ground_truth", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, MARKER])
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
    """Also: --output is --out (it used to be taken for an abbreviation of --outputs-dir)."""
    write_space_ranger(sample, tmp_path / "outs")
    code = cli.main(["run", str(tmp_path), "--n-domains", "3", "--output", str(tmp_path / "out"), "--epochs", "5",
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
    # --output is --out, not an abbreviation of report's --outputs-dir
    assert cli._parser().parse_args(["report", "x.h5ad", "--output", "r.html"]).out == "r.html"


def test_demo_command_small(tmp_path):
    code = cli.main(["demo", "--out", str(tmp_path), "--n-spots", "300", "--n-domains", "3", "--epochs", "20",
                     "--cluster-method", "kmeans", "--quiet"])
    assert code == 0
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["scores"]["label_key"] == "ground_truth"


def test_run_integrates_several_inputs_into_one_folder_per_slice_and_a_joint_one(tmp_path):
    paths = []
    for seed, name in ((21, "A.h5ad"), (22, "B.h5ad")):
        sd.datasets.simulate_visium(250, 3, seed=seed).write_h5ad(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "out"
    code = cli.main(["run", *paths, "--method", "spotscape", "--n-domains", "3", "--epochs", "3", "--out", str(out),
                     "--cluster-method", "kmeans", "--label-key", "ground_truth", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "A", "B", cli.JOINT_FOLDER]
    for name, path in zip("AB", paths):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(RUN_FILES)
        domains = pd.read_csv(out / name / "domains.csv", index_col="barcode")
        assert list(domains.index) == list(sd.io.read(path).obs_names)  # spot for spot, the slice's own names
    joint = out / cli.JOINT_FOLDER
    assert (joint / "umap.png").exists()
    combined = sd.io.read(joint / "result.h5ad")
    sizes = {name: sd.io.read(path).n_obs for name, path in zip("AB", paths)}
    assert combined.obs["slice"].value_counts().to_dict() == sizes
    provenance = json.loads((joint / "provenance.json").read_text())
    assert provenance["spotscape"]["slices"] == ["A", "B"]
    assert set(provenance["integration"]) >= {"ilisi", "batch_kl", "graph_connectivity", "batch_silhouette"}


def test_run_with_a_batch_key_splits_one_input(tmp_path):
    first, second = sd.datasets.simulate_visium(220, 3, seed=5), sd.datasets.simulate_visium(200, 3, seed=6)
    combined = sd.slices.combine({"s1": first, "s2": second}, "section")
    combined.write_h5ad(tmp_path / "both.h5ad")
    code = cli.main(["run", str(tmp_path / "both.h5ad"), "--batch-key", "section", "--n-domains", "3", "--epochs", "3",
                     "--out", str(tmp_path / "out"), "--cluster-method", "kmeans", "--quiet"])
    assert code == 0
    for name, part in (("s1", first), ("s2", second)):
        table = pd.read_csv(tmp_path / "out" / name / "domains.csv")
        assert len(table) == part.n_obs


def test_options_of_the_other_model_are_refused(sample, tmp_path, capsys):
    sample.write_h5ad(tmp_path / "s.h5ad")
    code = cli.main(["run", str(tmp_path / "s.h5ad"), "--method", "spotscape", "--tau", "5", "--out",
                     str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "--tau" in capsys.readouterr().err


def test_run_spami_from_modality_files_and_from_an_h5mu(tmp_path, capsys):
    mdata = sd.datasets.simulate_multiomics(300, 3, second="adt", seed=5)
    rna, adt = tmp_path / "RNA.h5ad", tmp_path / "ADT.h5ad"
    mdata["rna"].write_h5ad(rna)
    mdata["adt"].write_h5ad(adt)
    out = tmp_path / "out"
    code = cli.main(["run", "--method", "spami", "--modality", f"rna={rna}", "--modality", f"adt={adt}",
                     "--n-domains", "3", "--epochs", "20", "--label-key", "ground_truth", "--out", str(out),
                     "--quiet"])
    assert code == 0
    for name in ("domains.csv", "embedding.csv", "domains.png", "attention.png", "provenance.json", "result.h5mu"):
        assert (out / name).exists(), name
    domains = pd.read_csv(out / "domains.csv", index_col=0)
    assert len(domains) == mdata.n_obs and domains["domain"].nunique() == 3
    record = json.loads((out / "provenance.json").read_text())
    assert record["spami"]["modalities"] == ["rna", "adt"] and "ari" in record["scores"]["domain"]
    assert "ARI" in capsys.readouterr().out

    again = tmp_path / "again"
    assert cli.main(["run", str(out / "result.h5mu"), "--method", "baseline", "--n-domains", "3",
                     "--out", str(again), "--quiet"]) == 0
    assert pd.read_csv(again / "domains.csv", index_col=0)["domain"].nunique() == 3


def test_spami_arguments_are_checked(tmp_path, capsys):
    assert cli.main(["run", "--method", "spami", "--modality", "rna", "--out", str(tmp_path)]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert cli.main(["run", "--method", "spami", "--out", str(tmp_path)]) == 2
    assert "one section" in capsys.readouterr().err
    assert cli.main(["run", "x.h5ad", "--method", "staig", "--modality", "rna=x.h5ad", "--out", str(tmp_path)]) == 2
    assert "--modality" in capsys.readouterr().err
    paired = sd.datasets.simulate_multiomics(100, 2, seed=1)
    paired.write(tmp_path / "paired.h5mu")
    out = tmp_path / "out"
    assert cli.main(["run", str(tmp_path / "paired.h5mu"), "--method", "spami", "--label-key", "Y", "--epochs",
                     "100000", "--out", str(out)]) == 2  # before training (100,000 epochs would not end)
    assert "--label-key: no obs['Y']" in capsys.readouterr().err and not out.exists()


def test_run_staig_with_an_image_file_and_scale(tmp_path, capsys):
    import matplotlib.pyplot as plt

    adata = sd.datasets.simulate_visium(120, 3, seed=2, image=True)
    plt.imsave(tmp_path / "slide.png", adata.uns["spatial"]["simulated"]["images"]["hires"])
    del adata.uns["spatial"]
    adata.write_h5ad(tmp_path / "sample.h5ad")
    out = tmp_path / "out"
    code = cli.main(["run", str(tmp_path / "sample.h5ad"), "--n-domains", "3", "--out", str(out), "--epochs", "3",
                     "--cluster-method", "kmeans", "--image", str(tmp_path / "slide.png"), "--image-scale",
                     str(sd.datasets.IMAGE_SCALE), "--backbone", "resnet18", "--quiet"])
    assert code == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["staig"]["image_key"] == "X_image"
    assert provenance["image_features"]["image_sources"] == ["file slide.png"]
    assert provenance["image_features"]["patch_sides_px"] == [round(3.5 * 1.055 * 100 * sd.datasets.IMAGE_SCALE)]


def test_image_options_are_checked(sample, tmp_path, capsys):
    sample.write_h5ad(tmp_path / "sample.h5ad")
    common = ["run", str(tmp_path / "sample.h5ad"), "--out", str(tmp_path / "out")]
    assert cli.main([*common, "--image-scale", "0.5"]) != 0
    assert "only apply together with --image" in capsys.readouterr().err
    assert cli.main([*common, "--image", "--image-scale", "0.5"]) != 0
    assert "--image FILE --image-scale" in capsys.readouterr().err
    assert cli.main([*common, "--method", "spotscape", "--image"]) != 0
    assert "--image" in capsys.readouterr().err


def test_run_in_the_large_data_mode_and_its_flags_in_the_words_of_the_command_line(sample, tmp_path, capsys):
    sample.write_h5ad(tmp_path / "s.h5ad")
    out = tmp_path / "o"
    code = cli.main(["run", str(tmp_path / "s.h5ad"), "--n-domains", "3", "--epochs", "2", "--training", "minibatch",
                     "--batch-size", "100", "--cluster-method", "kmeans", "--out", str(out), "--quiet"])
    assert code == 0
    training = json.loads((out / "provenance.json").read_text())["staig"]["training"]
    assert training["mode"] == "minibatch" and training["batch_size"] == 100 and training["steps_per_epoch"] >= 2
    code = cli.main(["run", str(tmp_path / "s.h5ad"), "--batch-size", "0", "--out", str(tmp_path / "p"), "--quiet"])
    assert code == 2 and "--batch-size 0: give a whole number of at least 1" in capsys.readouterr().err
    code = cli.main(["run", str(tmp_path / "s.h5ad"), "--method", "spotscape", "--n-domains", "3", "--epochs", "2",
                     "--training", "minibatch", "--batch-size", "100", "--cluster-method", "kmeans",
                     "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 0
    training = json.loads((tmp_path / "r" / "provenance.json").read_text())["spotscape"]["training"]
    assert training["mode"] == "minibatch" and training["batch_size"] == 100 and training["steps_per_epoch"] >= 2
    code = cli.main(["run", str(tmp_path / "s.h5ad"), "--method", "baseline", "--training", "minibatch",
                     "--out", str(tmp_path / "q"), "--quiet"])
    assert code == 2 and "--training minibatch does not apply to Baseline" in capsys.readouterr().err
    assert not (tmp_path / "p").exists() and not (tmp_path / "q").exists()
