"""Benchmark STAIG (gene mode) on DLPFC 151673: training time, time per epoch, peak memory, ARI over seeds.

Each seed runs in its own process so that peak RSS is measured per run. Usage (from the repository root):

    .venv/bin/python bench/bench_staig.py [--epochs 300] [--tau 10] [--preset paper|published] [--seeds 0 1 2]
        [--library-size-key sum_umi_allgenes] [--labelled-only] [--training minibatch --batch-size 1024]
        [--json results.json]

The data are read from ../shared/data (or $SPATIALDOMAINS_SHARED/data).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _bench import DLPFC, DLPFC_LABEL, check_floor, mean_sd, peak_rss_mb, require, run_child


def one_run(seed: int, options: dict) -> dict:
    """Train and cluster once in this process; return the measurements.

    ``options``: epochs, tau, preset, cluster_method, library_size_key (per-spot totals over all genes, e.g.
    'sum_umi_allgenes'), labelled_only (train on the annotated spots only, as the published protocol does).
    """
    import anndata as ad

    import spatialdomains as sd

    adata = ad.read_h5ad(DLPFC)
    if options["labelled_only"]:
        adata = adata[adata.obs[DLPFC_LABEL].notna()].copy()
    started = time.perf_counter()
    sd.find_domains(adata, n_domains=7, cluster_method=options["cluster_method"], refine=True, random_state=seed,
                    progress=False, n_epochs=options["epochs"], tau=options["tau"], preset=options["preset"],
                    library_size_key=options["library_size_key"], training=options["training"],
                    batch_size=options["batch_size"])
    total = time.perf_counter() - started
    record = adata.uns["spatialdomains"]
    training = record["staig"]["training"]
    return {
        "seed": seed,
        "n_spots": adata.n_obs,
        "epochs": int(training["epochs_run"]),
        "train_seconds": float(training["train_seconds"]),
        "seconds_per_epoch": float(training["seconds_per_epoch"]),
        "total_seconds": total,
        "peak_rss_mb": peak_rss_mb(),
        "ari_refined": sd.metrics.ari(adata.obs[DLPFC_LABEL], adata.obs["domain"]),
        "ari_unrefined": sd.metrics.ari(adata.obs[DLPFC_LABEL], adata.obs["domain_unrefined"]),
        "nmi_refined": sd.metrics.nmi(adata.obs[DLPFC_LABEL], adata.obs["domain"]),
        "cluster_backend": record["cluster"]["backend"],
        "device": training["device"],
        "mode": training.get("mode", "full"),
        "steps_per_epoch": training.get("steps_per_epoch", 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--tau", type=float, default=None, help="default: the preset's")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cluster-method", default="mclust")
    parser.add_argument("--library-size-key", help="obs column of per-spot totals over all genes "
                        "(sum_umi_allgenes in the shared file, which holds 5,000 genes)")
    parser.add_argument("--labelled-only", action="store_true",
                        help="train on the annotated spots only (the published protocol drops the others first)")
    parser.add_argument("--training", default="auto", choices=["auto", "full", "minibatch"])
    parser.add_argument("--batch-size", type=int, default=2048, help="spots per mini-batch step (default 2048)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--floor", type=float, help="exit 1 when the mean refined ARI is below this (make accuracy)")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)  # internal: one seed, print JSON
    args = parser.parse_args()
    options = {"epochs": args.epochs, "tau": args.tau, "preset": args.preset,
               "cluster_method": args.cluster_method, "library_size_key": args.library_size_key,
               "labelled_only": args.labelled_only, "training": args.training, "batch_size": args.batch_size}

    if args.single is not None:
        print(json.dumps(one_run(args.single, options)))
        return 0
    if not require(DLPFC):
        return 2

    runs = []
    for seed in args.seeds:
        runs.append(run_child(__file__, [*sys.argv[1:], "--single", str(seed)]))  # same flags, one seed
        run = runs[-1]
        print(f"seed {seed}: train {run['train_seconds']:.1f} s ({run['seconds_per_epoch']:.3f} s/epoch), "
              f"peak RSS {run['peak_rss_mb']:.0f} MB, ARI {run['ari_refined']:.3f} refined / "
              f"{run['ari_unrefined']:.3f} unrefined", flush=True)

    report = {"dataset": "DLPFC 151673", **options, "runs": runs,
              "summary": {k: mean_sd([r[k] for r in runs]) for k in ("train_seconds", "seconds_per_epoch",
                                                                      "peak_rss_mb", "ari_refined",
                                                                      "ari_unrefined", "nmi_refined")}}
    print(f"\nSTAIG on DLPFC 151673 ({runs[0]['n_spots']} spots), {args.epochs} epochs, preset {args.preset}, "
          f"tau {args.tau or 'preset'}, {runs[0]['mode']} training ({runs[0]['steps_per_epoch']:.1f} steps per epoch), library size {args.library_size_key or 'over the genes in the file'}, "
          f"{len(runs)} seeds ({runs[0]['device']}, {runs[0]['cluster_backend']}):")
    for key, (mean, sd) in report["summary"].items():
        print(f"  {key:>18}: {mean:.3f} ± {sd:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if check_floor("STAIG DLPFC 151673 mean refined ARI", report["summary"]["ari_refined"][0],
                            args.floor) else 1


if __name__ == "__main__":
    sys.exit(main())
