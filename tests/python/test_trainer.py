import numpy as np
import pytest
import torch

from spatialdomains.errors import InputError
from spatialdomains.graph import knn_graph
from spatialdomains.methods import StaigConfig
from spatialdomains.models import staig
from spatialdomains.models.trainer import EarlyStopping, Trainer, select_device, seed_everything


@pytest.fixture(scope="module")
def features(small_sample_module):
    from spatialdomains import io, pp

    checked = io.check_input(small_sample_module)
    x, _ = pp.staig_features(checked.counts, n_top_genes=300)
    return x, knn_graph(checked.coordinates, 5)


@pytest.fixture(scope="module")
def small_sample_module():
    import spatialdomains as sd

    return sd.datasets.simulate_visium(400, 3, seed=7)


def _train(features, seed, epochs=15, **kwargs):
    x, adjacency = features
    config = StaigConfig(n_epochs=epochs)
    return staig.train_staig(x, adjacency, config, device=torch.device("cpu"), random_state=seed, progress=False,
                             **kwargs)


def test_same_seed_same_embedding_on_cpu(features):
    first, second = _train(features, 5), _train(features, 5)
    np.testing.assert_array_equal(first.embedding, second.embedding)
    assert first.record["loss_history"].tolist() == second.record["loss_history"].tolist()
    other = _train(features, 6)
    assert not np.allclose(first.embedding, other.embedding)


def test_training_lowers_the_loss(features):
    history = _train(features, 0, epochs=60).record["loss_history"]
    assert history[-10:].mean() < history[:5].mean()


def test_record_has_timings_and_device(features):
    record = _train(features, 0, epochs=3).record
    assert record["device"] == "cpu" and record["epochs_run"] == 3
    assert record["train_seconds"] > 0 and record["seconds_per_epoch"] == pytest.approx(record["train_seconds"] / 3)


def test_checkpoint_resume_equals_uninterrupted_training(tmp_path):
    def make():
        seed_everything(0)
        model = torch.nn.Linear(4, 1)
        return model, torch.optim.Adam(model.parameters(), lr=0.1)

    x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)), torch.randn(32, 1)

    def step(model):
        return lambda epoch: ((model(x + 0.1 * torch.randn_like(x)) - y) ** 2).mean()

    model, optimizer = make()
    full = Trainer(model, optimizer, epochs=20, device=torch.device("cpu"), progress=False)
    full.fit(step(model))

    model, optimizer = make()
    first = Trainer(model, optimizer, epochs=10, device=torch.device("cpu"), progress=False)
    first.fit(step(model))
    first.save_checkpoint(tmp_path / "model.pt")
    model, optimizer = make()
    resumed = Trainer(model, optimizer, epochs=20, device=torch.device("cpu"), progress=False)
    resumed.load_checkpoint(tmp_path / "model.pt")
    resumed.fit(step(model))
    assert resumed.record.loss_history == pytest.approx(full.record.loss_history, rel=1e-6)
    torch.testing.assert_close(model.weight, full.model.weight)


def test_early_stopping_hook():
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), epochs=100, device=torch.device("cpu"),
                      progress=False, early_stopping=EarlyStopping(patience=5))
    record = trainer.fit(lambda epoch: model(torch.ones(1, 1)).sum() * 0 + 1.0)
    assert record.stopped_early and len(record.loss_history) == 6


def test_non_finite_loss_is_reported():
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, device=torch.device("cpu"),
                      progress=False)
    with pytest.raises(FloatingPointError, match="learning rate"):
        trainer.fit(lambda epoch: model(torch.ones(1, 1)).sum() * float("nan"))


def test_device_selection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(InputError, match="device='gpu': not a device name"):
        select_device("gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_training_runs(features):
    x, adjacency = features
    result = staig.train_staig(x, adjacency, StaigConfig(n_epochs=5), device=torch.device("cuda"),
                               progress=False)
    assert result.record["device"].startswith("cuda") and np.isfinite(result.embedding).all()


def test_threads_follow_the_free_cores_and_the_sample_size():
    from spatialdomains.models.trainer import ROWS_PER_THREAD, plan_threads

    idle, busy = (lambda: 8), (lambda: 1)
    assert plan_threads(None, 100_000, cores=idle).torch == 8
    assert plan_threads(None, 100_000, cores=busy).torch == 1  # a core another process keeps busy is not used
    assert plan_threads(None, 3 * ROWS_PER_THREAD, cores=idle).torch == 3  # small samples: fewer threads
    small = plan_threads(None, 300, cores=lambda: pytest.fail("small samples need no measurement"))
    assert small.torch == 1 and "too few" in small.reason
    inside_r = plan_threads(None, 100_000, inside_r=True, cores=idle)
    assert (inside_r.torch, inside_r.blas) == (8, 1)  # R's BLAS kept to one thread beside torch's pool
    assert plan_threads(3, 10, cores=idle).as_dict() == {"torch": 3, "blas": 3, "reason": "requested"}
    with pytest.raises(InputError, match="n_threads=0"):
        plan_threads(0, 10)


def test_the_thread_settings_are_restored_after_a_run(small_sample):
    from threadpoolctl import threadpool_info

    import spatialdomains as sd

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    torch_before, blas_before = torch.get_num_threads(), blas_threads()
    adata = small_sample.copy()
    sd.tl.staig(adata, n_epochs=2, progress=False, n_threads=1)
    assert adata.uns["spatialdomains"]["staig"]["threads"]["torch"] == 1
    assert torch.get_num_threads() == torch_before and blas_threads() == blas_before


def test_progress_without_a_terminal_is_one_line_per_tenth_of_the_epochs(small_sample, capsys):
    """R's console and log files cannot redraw a bar: they get plain lines instead."""
    import spatialdomains as sd

    sd.tl.staig(small_sample.copy(), n_epochs=30, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("STAIG: ")]
    assert len(lines) == 10 and lines[-1].startswith("STAIG: 30/30 epochs, loss ")
    assert "about 0 s left" in lines[-1]
    sd.tl.staig(small_sample.copy(), n_epochs=30, progress=False)
    assert "STAIG: " not in capsys.readouterr().err


def test_every_long_step_reports_progress_the_same_way(capsys):
    """Image patches, BYOL and batches share the trainer's progress: lines at each tenth, and at the end."""
    from spatialdomains._utils import Progress, progress_steps

    assert list(progress_steps(range(25), "BYOL", unit="steps")) == list(range(25))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"BYOL: {n}/25 steps" for n in (3, 6, 9, 12, 15, 18, 21, 24, 25)]
    with Progress("image patches", 1000, unit="spots") as bar:
        bar.update(640)  # one update crossing several tenths gives one line
        bar.update(360)
    assert [line.split(",")[0] for line in capsys.readouterr().err.splitlines()] == [
        "image patches: 640/1000 spots", "image patches: 1000/1000 spots"]
    list(progress_steps(range(5), "quiet", enabled=False))
    assert capsys.readouterr().err == ""
