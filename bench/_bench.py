"""What the benchmark scripts share: where the shared data live, peak memory of this process, running one
measurement in a child process (so that its peak RSS is its own), busy processes to load the machine, and
mean ± s.d. over runs."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPATIALDOMAINS_SHARED", REPO.parent / "shared"))
DLPFC = SHARED / "data" / "dlpfc_151673" / "dlpfc_151673.h5ad"
DLPFC_LABEL = "layer_guess_reordered"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, arguments: list[str]) -> dict:
    """Run ``script`` with ``arguments`` in a new Python process; its last output line is JSON, returned."""
    output = subprocess.run([sys.executable, script, *arguments], check=True, capture_output=True,
                            text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` plain Python loops, each keeping a core busy, for the duration of the block."""
    import time

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        if hogs:
            time.sleep(1.0)  # on their cores before the measured run looks for free ones
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def require(path: Path) -> bool:
    """True when ``path`` exists; otherwise say how to point the benchmarks at the shared folder."""
    if path.exists():
        return True
    print(f"missing {path}: set SPATIALDOMAINS_SHARED to the shared folder", file=sys.stderr)
    return False


def check_floor(what: str, value: float, floor: float | None) -> bool:
    """Print how ``value`` compares with its ``floor`` (None: no floor asked); False when it falls below."""
    if floor is None:
        return True
    passed = value >= floor
    print(f"{'PASS' if passed else 'FAIL'}: {what} {value:.3f} (floor {floor:.3f})", flush=True)
    return passed
