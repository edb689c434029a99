"""Benchmark Spotscape: DLPFC 151673 single slice (time per epoch, peak memory, ARI over seeds, against the
architecture's FLOP floor on this machine) and a memory curve of the Spotscape and STAIG losses on synthetic
spots. Each measurement runs in its own process so that peak RSS is its own. Usage (repository root):

    .venv/bin/python bench/bench_spotscape.py dlpfc [--epochs 1000] [--seeds 0 1 2] [--momentum 0.1] [--json F]
        [--training minibatch --batch-size 1024 --epochs 0]
    .venv/bin/python bench/bench_spotscape.py memory [--sizes 5000 20000 50000] [--json F]

The data are read from ../shared/data (or $SPATIALDOMAINS_SHARED/data).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _bench import DLPFC, DLPFC_LABEL, check_floor, mean_sd, peak_rss_mb, require, run_child

#: Multiply-adds ×2 of the big products per epoch for the published computation at G = 5000 genes, B = 3639
#: spots, hidden 256: per view the encoder's first layer (forward, weight gradient) and the decoder's last layer
#: (forward, weight gradient, input gradient), i.e. 5 products of 2·B·G·256 FLOP per view, 10 in all.
PUBLISHED_GFLOP_PER_EPOCH = 10 * 2 * 3639 * 5000 * 256 / 1e9


def gemm_gflops() -> float:
    """This machine's fp32 rate on the architecture's dominant product, (3639 × 5000) · (5000 × 256)."""
    import torch

    x, w = torch.rand(3639, 5000), torch.rand(5000, 256)
    x @ w
    started = time.perf_counter()
    for _ in range(10):
        x @ w
    return 10 * 2 * 3639 * 5000 * 256 / (time.perf_counter() - started) / 1e9


def dlpfc_run(epochs: int, seed: int, learning_rate: float, momentum: float, training: str = "full",
              batch_size: int = 2048) -> dict:
    import anndata as ad

    import spatialdomains as sd

    adata = ad.read_h5ad(DLPFC)
    sd.tl.spotscape(adata, n_epochs=epochs or None, learning_rate=learning_rate, batch_norm_momentum=momentum,
                    random_state=seed, progress=False, training=training, batch_size=batch_size)
    sd.tl.cluster(adata, use_rep="X_spotscape", n_domains=7, method="kmeans", refine=False)
    training = adata.uns["spatialdomains"]["spotscape"]["training"]
    # The published evaluation clusters the annotated spots only (all spots are trained on in both protocols).
    labels = adata.obs[DLPFC_LABEL]
    annotated = labels.notna().to_numpy()
    domains_annotated = sd.cluster.kmeans(adata.obsm["X_spotscape"][annotated], 7)
    return {"seed": seed, "epochs": int(training["epochs_run"]), "train_seconds": float(training["train_seconds"]),
            "seconds_per_epoch": float(training["seconds_per_epoch"]), "peak_rss_mb": peak_rss_mb(),
            "ari": sd.metrics.ari(labels, adata.obs["domain"]), "nmi": sd.metrics.nmi(labels, adata.obs["domain"]),
            "ari_annotated_clustered": sd.metrics.ari(labels[annotated], domains_annotated),
            "device": training["device"], "mode": training.get("mode", "full"),
            "steps_per_epoch": training.get("steps_per_epoch", 1)}


def memory_run(model: str, n_spots: int, epochs: int) -> dict:
    """Peak RSS of training on ``n_spots`` synthetic spots in two slices (so the multi-slice terms run too)."""
    import numpy as np
    import torch

    from spatialdomains import graph
    from spatialdomains.methods import SpotscapeConfig, StaigConfig
    from spatialdomains.methods.spotscape import MULTI_SLICE_LEARNING_RATE
    from spatialdomains.models import spotscape, staig

    rng = np.random.default_rng(0)
    half = n_spots // 2
    coordinates = rng.uniform(0, np.sqrt(n_spots) * 100, (n_spots, 2))
    codes = np.repeat([0, 1], [half, n_spots - half])
    bounds = [(0, half), (half, n_spots)]
    baseline = peak_rss_mb()
    n_genes = 5000 if model == "spotscape" else 3000
    x = rng.random((n_spots, n_genes), dtype=np.float32)  # expression-like: 75% zeros, made in place
    x[x < 0.75] = 0
    x *= 4
    if model == "spotscape":
        adjacency = graph.multi_slice_graph(coordinates, codes, "knn", n_neighbors=6)
        config = SpotscapeConfig(n_epochs=epochs, warmup_epochs=0, learning_rate=MULTI_SLICE_LEARNING_RATE)
        result = spotscape.train_spotscape(x, adjacency, config, slice_bounds=bounds, n_domains=7,
                                           device=torch.device("cpu"), progress=False)
    else:
        adjacency = graph.multi_slice_graph(coordinates, codes, "knn", n_neighbors=5)
        config = StaigConfig(n_epochs=epochs)
        result = staig.train_staig(x, adjacency, config, slice_bounds=bounds, device=torch.device("cpu"),
                                   progress=False)
    return {"model": model, "n_spots": n_spots, "epochs": epochs, "input_mb": x.nbytes / 2**20,
            "rss_after_imports_mb": baseline, "peak_rss_mb": peak_rss_mb(),
            "seconds_per_epoch": float(result.record["seconds_per_epoch"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dlpfc = commands.add_parser("dlpfc")
    dlpfc.add_argument("--epochs", type=int, default=1000, help="0: the mode's default (about 2,000 steps in "
                                                                   "mini-batches)")
    dlpfc.add_argument("--training", choices=["full", "minibatch"], default="full")
    dlpfc.add_argument("--batch-size", type=int, default=2048)
    dlpfc.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    dlpfc.add_argument("--learning-rate", type=float, default=1e-4)
    dlpfc.add_argument("--momentum", type=float, default=0.1)
    dlpfc.add_argument("--json")
    dlpfc.add_argument("--floor", type=float, help="exit 1 when the mean ARI is below this (make accuracy)")
    memory = commands.add_parser("memory")
    memory.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    memory.add_argument("--models", nargs="+", default=["spotscape", "staig"])
    memory.add_argument("--epochs", type=int, default=2)
    memory.add_argument("--json")
    one = commands.add_parser("one", help=argparse.SUPPRESS)  # internal: one measurement, printed as JSON
    one.add_argument("what", nargs="+")
    args = parser.parse_args()

    if args.command == "one":
        kind, *rest = args.what
        if kind == "dlpfc":
            epochs, seed, lr, momentum = int(rest[0]), int(rest[1]), float(rest[2]), float(rest[3])
            print(json.dumps(dlpfc_run(epochs, seed, lr, momentum, rest[4], int(rest[5]))))
        else:
            print(json.dumps(memory_run(rest[0], int(rest[1]), int(rest[2]))))
        return 0

    if args.command == "dlpfc":
        if not require(DLPFC):
            return 2
        rate = gemm_gflops()
        runs = []
        for seed in args.seeds:
            runs.append(run_child(__file__, ["one", "dlpfc", str(args.epochs), str(seed),
                                             str(args.learning_rate), str(args.momentum), args.training,
                                             str(args.batch_size)]))
            run = runs[-1]
            print(f"seed {seed}: {run['train_seconds']:.0f} s ({run['seconds_per_epoch']:.3f} s/epoch), peak RSS "
                  f"{run['peak_rss_mb']:.0f} MB, ARI {run['ari']:.3f}, NMI {run['nmi']:.3f}, ARI with only the "
                  f"annotated spots clustered {run['ari_annotated_clustered']:.3f}", flush=True)
        floor = PUBLISHED_GFLOP_PER_EPOCH / rate
        per_epoch = mean_sd([r["seconds_per_epoch"] for r in runs])
        report = {"dataset": "DLPFC 151673", "epochs": args.epochs, "learning_rate": args.learning_rate,
                  "batch_norm_momentum": args.momentum, "cluster": "kmeans, k=7, no refinement", "runs": runs,
                  "gemm_gflops": rate, "floor_seconds_per_epoch": floor,
                  "floor_fraction": floor / per_epoch[0],
                  "summary": {k: mean_sd([r[k] for r in runs])
                              for k in ("train_seconds", "seconds_per_epoch", "peak_rss_mb", "ari", "nmi",
                                        "ari_annotated_clustered")}}
        print(f"\nSpotscape on DLPFC 151673, {args.epochs} epochs, lr {args.learning_rate}, BN momentum "
              f"{args.momentum}, {len(runs)} seeds ({runs[0]['device']}):")
        for key, (mean, sd) in report["summary"].items():
            print(f"  {key:>23}: {mean:.3f} ± {sd:.3f}")
        print(f"  fp32 GEMM {rate:.0f} GFLOP/s: the published computation's floor is {floor:.3f} s/epoch "
              f"({PUBLISHED_GFLOP_PER_EPOCH:.0f} GFLOP); measured/floor time = {1 / report['floor_fraction']:.2f}")
    else:
        report = {"runs": []}
        for model in args.models:
            for n in args.sizes:
                run = run_child(__file__, ["one", "memory", model, str(n), str(args.epochs)])
                report["runs"].append(run)
                print(f"{model:>9} N={n:>6}: peak RSS {run['peak_rss_mb']:.0f} MB (after imports "
                      f"{run['rss_after_imports_mb']:.0f} MB, input {run['input_mb']:.0f} MB), "
                      f"{run['seconds_per_epoch']:.2f} s/epoch", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.command == "dlpfc":
        return 0 if check_floor("Spotscape DLPFC 151673 mean ARI", report["summary"]["ari"][0], args.floor) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
