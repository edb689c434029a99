"""The training loop every model uses: device choice, seeding, progress, loss history, early stopping,
checkpoints and timings. A model supplies a function ``step(epoch) -> loss tensor``; the trainer does the rest.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .._utils import Progress, atomic_path
from ..errors import InputError, option

logger = logging.getLogger("spatialdomains")


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``'auto'`` picks CUDA, then Apple MPS, then CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"{option('device', device)}: not a device name; use 'auto', 'cpu', 'cuda', 'cuda:1' or "
                         "'mps'") from error
    fallback = f"use {option('device', 'auto')} (a GPU when there is one) or {option('device', 'cpu')}"
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{option('device', device)}: CUDA is not available on this machine; {fallback}")
    mps = getattr(torch.backends, "mps", None)
    if chosen.type == "mps" and (mps is None or not mps.is_available()):
        raise InputError(f"{option('device', device)}: Apple MPS is not available on this machine; {fallback}")
    return chosen


#: Spots per CPU thread below which another thread costs more in synchronisation than it saves.
ROWS_PER_THREAD = 500


@dataclass(frozen=True)
class ThreadPlan:
    """How many CPU threads torch and the BLAS of the process use during a run, and why."""

    torch: int
    blas: int
    reason: str

    def as_dict(self) -> dict:
        return {"torch": self.torch, "blas": self.blas, "reason": self.reason}


def allowed_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_cores(sample_seconds: float = 0.25) -> int:
    """CPU cores this process may use that other work is not keeping busy, from a short sample of CPU use.

    Small operations on several threads that meet at every step stall whenever one thread loses its core, so a
    core another process keeps busy is worse than no core at all.
    """
    import psutil

    allowed = allowed_cores()
    total = psutil.cpu_count() or allowed
    busy = round(psutil.cpu_percent(interval=sample_seconds) / 100 * total)
    return max(1, min(allowed, total - busy))


def plan_threads(requested: int | None, n_rows: int, *, inside_r: bool = False,
                 cores: Callable[[], int] = free_cores) -> ThreadPlan:
    """The threads for a run of ``n_rows`` spots: ``requested`` when given, else one per free core, and no more
    than one per :data:`ROWS_PER_THREAD` spots. Inside R, R's own BLAS (which torch does not use) is
    kept to one thread so that its pool and torch's never compete for the same cores."""
    if requested is not None:
        if isinstance(requested, bool) or int(requested) != requested or requested < 1:
            raise InputError(f"{option('n_threads', requested)}: give a whole number of at least 1, or leave it "
                             "unset to use the free cores")
        threads, reason = int(requested), "requested"
    elif n_rows < 2 * ROWS_PER_THREAD:
        threads, reason = 1, f"{n_rows} spots: too few to share between threads"
    else:
        free = cores()
        threads = min(free, n_rows // ROWS_PER_THREAD)
        reason = (f"{free} free core{'s' if free != 1 else ''}" if threads == free else
                  f"{n_rows} spots (one thread per {ROWS_PER_THREAD}); {free} free cores")
    return ThreadPlan(torch=threads, blas=1 if inside_r else threads, reason=reason)


@contextlib.contextmanager
def cpu_threads(plan: ThreadPlan) -> Iterator[None]:
    """torch's intra-op threads and every BLAS pool in the process (R's too, inside R) follow ``plan`` within the
    block; the previous settings are restored afterwards."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=plan.blas, user_api="blas"), torch_threads(plan.torch):
        yield


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` within the block. Set again just before training: preprocessing
    libraries (scanpy's gene selection, for one) reset the OpenMP pool torch shares with them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def dense_features(x, device: torch.device) -> torch.Tensor:
    """Features (dense array or scipy sparse matrix) as one dense float32 tensor: what full-batch training holds
    whole. The large-data mode never calls this; it takes rows of the sparse matrix batch by batch."""
    import scipy.sparse as sp

    return torch.as_tensor(x.toarray() if sp.issparse(x) else x, dtype=torch.float32, device=device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Within the block, torch uses deterministic kernels when ``enabled``; the process's previous settings
    are restored afterwards (they are global to the process, and other code in it may rely on them)."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    # cuBLAS reads this when its first handle is created; it is needed for deterministic matmuls on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """The widest float type the device has, for sums whose terms nearly cancel: float64, except on Apple MPS,
    which has no float64 (float32 there, at the cost of a few digits in those sums)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class EarlyStopping:
    """Stop when the loss has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int = 50, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.waited = math.inf, 0

    def __call__(self, epoch: int, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best, self.waited = loss, 0
            return False
        self.waited += 1
        return self.waited >= self.patience


@dataclass
class TrainingRecord:
    """What happened during training, ready for provenance."""

    device: str
    epochs: int
    loss_history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    steps: int = 0

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(len(self.loss_history), 1)

    def as_dict(self) -> dict:
        return {"device": self.device, "epochs_requested": self.epochs, "epochs_run": len(self.loss_history),
                "train_seconds": self.seconds, "seconds_per_epoch": self.seconds_per_epoch,
                "stopped_early": self.stopped_early, "final_loss": self.loss_history[-1] if self.loss_history else None,
                "optimiser_steps": self.steps, "steps_per_epoch": self.steps / max(len(self.loss_history), 1),
                "loss_history": np.asarray(self.loss_history, dtype=np.float32)}


class Trainer:
    """Training of ``model`` with ``optimizer`` for ``epochs`` epochs of ``step(epoch)``.

    ``step(epoch)`` returns the loss of a full-batch epoch (one optimiser step), or, in the large-data mode, an
    iterator of the losses of its mini-batches (one optimiser step each, taken as the iterator advances); the
    epoch's loss is then their mean."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        epochs: int,
        device: torch.device,
        progress: bool = True,
        description: str = "training",
        early_stopping: Callable[[int, float], bool] | None = None,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.model, self.optimizer = model, optimizer
        self.epochs, self.device = epochs, device
        self.progress, self.description = progress, description
        self.early_stopping = early_stopping
        self.record = TrainingRecord(device=str(device), epochs=epochs)

    def fit(self, step: Callable[[int], torch.Tensor]) -> TrainingRecord:
        """Run the remaining epochs (after a loaded checkpoint, training resumes where it stopped)."""
        self.model.train()
        start = len(self.record.loss_history)
        started = time.perf_counter()
        bar = Progress(self.description, self.epochs, unit="epochs", enabled=self.progress, initial=start)
        for epoch in range(start, self.epochs):
            losses = step(epoch)
            values = [self._optimise(loss, epoch) for loss in ((losses,) if torch.is_tensor(losses) else losses)]
            value = float(np.mean(values))
            self.record.loss_history.append(value)
            self.record.steps += len(values)
            bar.update(loss=value)
            if self.early_stopping is not None and self.early_stopping(epoch, value):
                self.record.stopped_early = True
                logger.info("early stopping at epoch %d (loss %.5f)", epoch, value)
                break
        bar.close()
        self.record.seconds += time.perf_counter() - started
        self.model.eval()
        return self.record

    def _optimise(self, loss: torch.Tensor, epoch: int) -> float:
        """One optimiser step on ``loss``; its value."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at epoch {epoch}: lower the learning rate or check the input")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def save_checkpoint(self, path: str | Path) -> Path:
        """Save model, optimiser, loss history and RNG state atomically."""
        path = Path(path)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss_history": self.record.loss_history,
            "seconds": self.record.seconds,
            "steps": self.record.steps,
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` so that ``fit`` continues from it."""
        state = torch.load(Path(path), map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.record.loss_history = list(state["loss_history"])
        self.record.seconds = float(state["seconds"])
        self.record.steps = int(state.get("steps", len(self.record.loss_history)))
        torch.set_rng_state(state["torch_rng"].cpu())
