"""Benchmark STAIG (gene mode) on DLPFC 151673: training time, time per epoch, peak memory, ARI over seeds.

Each seed runs in its own process so that peak RSS is measured per run. Usage (from the repository root):

    .venv/bin/python bench/bench_staig.py [--epochs 300] [--tau 10] [--seeds 0 1 2] [--json results.json]

The data are read from ../shared/data (or $SPATIALDOMAINS_SHARED/data).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPATIALDOMAINS_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "dlpfc_151673" / "dlpfc_151673.h5ad"
LABEL = "layer_guess_reordered"


def one_run(epochs: int, tau: float, seed: int, cluster_method: str, preset: str) -> dict:
    """Train and cluster once in this process; return the measurements."""
    import anndata as ad

    import spatialdomains as sd

    adata = ad.read_h5ad(DATA)
    started = time.perf_counter()
    sd.find_domains(adata, n_domains=7, cluster_method=cluster_method, refine=True, random_state=seed,
                    progress=False, n_epochs=epochs, tau=tau, preset=preset)
    total = time.perf_counter() - started
    record = adata.uns["spatialdomains"]
    training = record["staig"]["training"]
    return {
        "seed": seed,
        "epochs": int(training["epochs_run"]),
        "train_seconds": float(training["train_seconds"]),
        "seconds_per_epoch": float(training["seconds_per_epoch"]),
        "total_seconds": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ari_refined": sd.metrics.ari(adata.obs[LABEL], adata.obs["domain"]),
        "ari_unrefined": sd.metrics.ari(adata.obs[LABEL], adata.obs["domain_unrefined"]),
        "nmi_refined": sd.metrics.nmi(adata.obs[LABEL], adata.obs["domain"]),
        "cluster_backend": record["cluster"]["backend"],
        "device": training["device"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--tau", type=float, default=None, help="default: the preset's")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cluster-method", default="mclust")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)  # internal: one seed, print JSON
    args = parser.parse_args()

    if args.single is not None:
        print(json.dumps(one_run(args.epochs, args.tau, args.single, args.cluster_method, args.preset)))
        return 0
    if not DATA.exists():
        print(f"missing {DATA}: set SPATIALDOMAINS_SHARED to the shared folder", file=sys.stderr)
        return 2

    runs = []
    for seed in args.seeds:
        command = [sys.executable, __file__, "--single", str(seed), "--epochs", str(args.epochs),
                   "--cluster-method", args.cluster_method, "--preset", args.preset]
        if args.tau is not None:
            command += ["--tau", str(args.tau)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
        run = runs[-1]
        print(f"seed {seed}: train {run['train_seconds']:.1f} s ({run['seconds_per_epoch']:.3f} s/epoch), "
              f"peak RSS {run['peak_rss_mb']:.0f} MB, ARI {run['ari_refined']:.3f} refined / "
              f"{run['ari_unrefined']:.3f} unrefined", flush=True)

    import numpy as np

    def summary(key):
        values = np.array([r[key] for r in runs])
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    report = {"dataset": "DLPFC 151673", "n_epochs": args.epochs, "tau": args.tau, "preset": args.preset,
              "cluster_method": args.cluster_method, "runs": runs,
              "summary": {k: summary(k) for k in ("train_seconds", "seconds_per_epoch", "peak_rss_mb",
                                                    "ari_refined", "ari_unrefined", "nmi_refined")}}
    print(f"\nSTAIG on DLPFC 151673, {args.epochs} epochs, tau {args.tau or 'preset'}, {len(runs)} seeds "
          f"({runs[0]['device']}, {runs[0]['cluster_backend']}):")
    for key, (mean, sd) in report["summary"].items():
        print(f"  {key:>18}: {mean:.3f} ± {sd:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
