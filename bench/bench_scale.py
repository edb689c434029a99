"""How the methods scale: simulated Xenium-like samples (``sd.datasets.simulate_cells``; for SpaMI and the
baseline, ``simulate_paired_cells``: the same RNA plus 30 proteins) from 10,000 to 1,000,000 cells, each measured
in its own process so that its peak RSS is its own.

    python bench/bench_scale.py [--methods staig spotscape spami] [--sizes 10000 50000 200000 1000000] [--epochs 2]
                                [--cluster] [--json results.json]

For each method and size: seconds to simulate and to read the sample back from .h5ad, the run's own step times
(preprocessing, graph, training), seconds per epoch (``--epochs`` short epochs: the large-data mode where
``training='auto'`` chooses it), peak RSS, and with ``--cluster`` the clustering time and ARI against the
planted niches. One JSON line per measurement, then a table; docs/scale.md keeps the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _bench import peak_rss_mb, run_child

GENES, NICHES, CELL_TYPES, PROTEINS = 500, 6, 12, 30
#: Methods that take paired omics: they get RNA + protein of the same cells.
PAIRED = ("spami", "baseline")


def measure(method: str, n_cells: int, epochs: int, cluster: bool, seed: int) -> dict:
    import anndata as ad
    import mudata

    import spatialdomains as sd

    started = time.perf_counter()
    if method in PAIRED:
        simulated = sd.datasets.simulate_paired_cells(n_cells, NICHES, CELL_TYPES, GENES, PROTEINS, seed=seed)
    else:
        simulated = sd.datasets.simulate_cells(n_cells, NICHES, CELL_TYPES, GENES, seed=seed)
    simulate_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / ("cells.h5mu" if method in PAIRED else "cells.h5ad")
        simulated.write(path)
        del simulated
        started = time.perf_counter()
        adata = mudata.read_h5mu(path) if method in PAIRED else ad.read_h5ad(path)
        read_seconds = time.perf_counter() - started
    options = {"random_state": seed, "progress": False, **({} if method == "baseline" else {"n_epochs": epochs})}
    started = time.perf_counter()
    if cluster:
        sd.tl.find_domains(adata, method, NICHES, **options)
    else:
        getattr(sd.tl, method)(adata, **options)
    run_seconds = time.perf_counter() - started
    record = adata.uns["spatialdomains"][method]
    training = record.get("training", {"epochs_run": 0, "seconds_per_epoch": float("nan")})
    result = {"method": method, "n_cells": n_cells, "n_genes": GENES, "seed": seed,
              "simulate_s": simulate_seconds, "read_s": read_seconds,
              **{f"{step}_s": float(seconds) for step, seconds in record["timings"].items()},
              "run_s": run_seconds, "epochs": int(training["epochs_run"]),
              "seconds_per_epoch": float(training["seconds_per_epoch"]), "mode": training.get("mode", "full"),
              "steps_per_epoch": training.get("steps_per_epoch", 1), "threads": record.get("threads", {}).get("torch"),
              "peak_rss_mb": peak_rss_mb()}
    if cluster:
        result["cluster_s"] = float(adata.uns["spatialdomains"]["cluster"]["timings"]["cluster"])
        result["ari"] = float(sd.metrics.ari(adata.obs["ground_truth"], adata.obs["domain"]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["staig"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 50_000, 200_000, 1_000_000])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per measurement (default 2)")
    parser.add_argument("--cluster", action="store_true", help="also cluster and score against the niches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n_cells, epochs, cluster = args.child
        print(json.dumps(measure(method, int(n_cells), int(epochs), cluster == "1", args.seed)))
        return 0
    results = []
    for method in args.methods:
        for n_cells in args.sizes:
            result = run_child(__file__, ["--child", method, str(n_cells), str(args.epochs),
                                          "1" if args.cluster else "0", "--seed", str(args.seed)])
            print(json.dumps(result), flush=True)
            results.append(result)
    print(f"\n{'method':9} {'cells':>9} {'mode':9} {'steps/ep':>8} {'s/epoch':>8} {'preproc s':>9} {'graph s':>7} "
          f"{'read s':>6} {'peak GB':>7}" + (f" {'cluster s':>9} {'ARI':>5}" if args.cluster else ""))
    for r in results:
        print(f"{r['method']:9} {r['n_cells']:>9} {r['mode']:9} {r['steps_per_epoch']:8.1f} {r['seconds_per_epoch']:8.2f} "
              f"{r.get('preprocess_s', float('nan')):9.1f} {r.get('graph_s', float('nan')):7.1f} {r['read_s']:6.1f} "
              f"{r['peak_rss_mb'] / 1024:7.2f}" + (f" {r['cluster_s']:9.1f} {r['ari']:5.3f}" if args.cluster else ""))
    by_size = {(r["method"], r["n_cells"]): r["seconds_per_epoch"] for r in results}
    for method in args.methods:
        if (method, 50_000) in by_size and (method, 200_000) in by_size:
            print(f"{method}: seconds per epoch 200k / 50k = {by_size[method, 200_000] / by_size[method, 50_000]:.2f} "
                  "(linear: 4)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
