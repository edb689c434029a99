"""How the methods scale: simulated Xenium-like samples (``sd.datasets.simulate_cells``; for SpaMI and the
baseline, ``simulate_paired_cells``: the same RNA plus 30 proteins) from 10,000 to 1,000,000 cells, each measured
in its own process so that its peak RSS is its own.

    python bench/bench_scale.py [--methods staig spotscape spami] [--sizes 10000 50000 200000 1000000] [--epochs 2]
                                [--cluster | --report [--flags "--preset cells"]] [--json results.json]

For each method and size: seconds to simulate and to read the sample back from .h5ad, the run's own step times
(preprocessing, graph, training), seconds per epoch (``--epochs`` short epochs: the large-data mode where
``training='auto'`` chooses it), peak RSS, and with ``--cluster`` the clustering time and ARI against the
planted niches. With ``--report``, each sample is instead reported end to end by the command line, as a user
would (``spatialdomains report cells.h5ad --method M --n-domains 6``, the method's default epochs and clusterer):
wall clock and peak RSS of that command, the seconds of each step it records, and the ARI of its domains.
One JSON line per measurement, then a table; docs/scale.md keeps the figures.
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import peak_rss_mb, run_child

GENES, NICHES, CELL_TYPES, PROTEINS = 500, 6, 12, 30
#: Methods that take paired omics: they get RNA + protein of the same cells.
PAIRED = ("spami", "baseline")


def simulate(method: str, n_cells: int, seed: int):
    """The sample a method is measured on, and the seconds it took to simulate."""
    import spatialdomains as sd

    started = time.perf_counter()
    if method in PAIRED:
        simulated = sd.datasets.simulate_paired_cells(n_cells, NICHES, CELL_TYPES, GENES, PROTEINS, seed=seed)
    else:
        simulated = sd.datasets.simulate_cells(n_cells, NICHES, CELL_TYPES, GENES, seed=seed)
    return simulated, time.perf_counter() - started


def sample_file(folder: str, method: str) -> Path:
    """Where the simulated sample is written: a .h5mu for the paired methods, else a .h5ad."""
    return Path(folder) / ("cells.h5mu" if method in PAIRED else "cells.h5ad")


def measure_report(method: str, n_cells: int, seed: int, flags: str = "") -> dict:
    """The command line's report of a simulated sample, end to end, in its own process, with further ``flags``
    (e.g. ``--preset cells``); with refinement the ARI of the unrefined domains is kept too."""
    import pandas as pd

    import spatialdomains as sd

    simulated, simulate_seconds = simulate(method, n_cells, seed)
    truth = simulated.obs["ground_truth"].astype(str)
    with tempfile.TemporaryDirectory() as scratch:
        path = sample_file(scratch, method)
        simulated.write(path)
        del simulated
        out = Path(scratch) / "out"
        command = [sys.executable, "-m", "spatialdomains.cli", "report", str(path), "--method", method,
                   "--n-domains", str(NICHES), "--seed", str(seed), "--engine", "fallback", *shlex.split(flags),
                   "--out", str(Path(scratch) / "report.html"), "--outputs-dir", str(out)]
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
        wall = time.perf_counter() - started
        provenance = json.loads((out / "provenance.json").read_text())
        domains = pd.read_csv(out / "domains.csv", index_col=0).astype(str).reindex(truth.index)
    model = provenance["model"]
    record, clustering = model.get(method, {}), model.get("cluster", {})
    return {"method": method, "n_cells": n_cells, "n_genes": GENES, "seed": seed, "flags": flags,
            "simulate_s": simulate_seconds,
            "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            **{f"{step}_s": float(seconds) for step, seconds in record.get("timings", {}).items()},
            **{f"report_{step}_s": float(seconds) for step, seconds in provenance["timings_seconds"].items()},
            "cluster_s": float(clustering.get("timings", {}).get("cluster", float("nan"))),
            "clusterer": clustering.get("backend"), "epochs": record.get("training", {}).get("epochs_run", 0),
            "mode": record.get("training", {}).get("mode", "none"),
            "refined": "domain_unrefined" in domains, "ari": float(sd.metrics.ari(truth, domains["domain"])),
            **({"ari_unrefined": float(sd.metrics.ari(truth, domains["domain_unrefined"]))}
               if "domain_unrefined" in domains else {})}


def measure(method: str, n_cells: int, epochs: int, cluster: bool, seed: int) -> dict:
    import anndata as ad
    import mudata

    import spatialdomains as sd

    simulated, simulate_seconds = simulate(method, n_cells, seed)
    with tempfile.TemporaryDirectory() as scratch:
        path = sample_file(scratch, method)
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
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--cluster", action="store_true", help="also cluster and score against the niches")
    what.add_argument("--report", action="store_true",
                      help="report each sample end to end with the command line (default epochs; --epochs unused)")
    parser.add_argument("--flags", default="", help="with --report: further flags of the report command, e.g. "
                                                    "'--preset cells' or '--refine yes'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n_cells, epochs, what = args.child
        if what == "report":
            print(json.dumps(measure_report(method, int(n_cells), args.seed, args.flags)))
        else:
            print(json.dumps(measure(method, int(n_cells), int(epochs), what == "cluster", args.seed)))
        return 0
    what = "report" if args.report else "cluster" if args.cluster else "train"
    results = []
    for method in args.methods:
        for n_cells in args.sizes:
            result = run_child(__file__, ["--child", method, str(n_cells), str(args.epochs), what,
                                          "--seed", str(args.seed), f"--flags={args.flags}"])
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.report:
        print_report_table(results)
    else:
        print_training_table(results, args.methods, args.cluster)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def print_report_table(results: list[dict]) -> None:
    steps = ("preprocess", "graph", "train", "cluster")
    print(f"\n{'method':9} {'cells':>9} {'mode':9} {'epochs':>6} {'wall min':>8} {'peak GB':>7} "
          + " ".join(f"{step + ' s':>12}" for step in steps)
          + f" {'umap s':>6} {'markers s':>9} {'clusterer':>9} {'ARI':>5} {'unrefined':>9}")
    for r in results:
        label = f"{r['method']} {r.get('flags', '')}".strip()
        print(f"{label:9} {r['n_cells']:>9} {r['mode']:9} {r['epochs']:>6} {r['wall_s'] / 60:8.1f} "
              f"{r['peak_rss_mb'] / 1024:7.2f} " + " ".join(f"{r.get(step + '_s', float('nan')):12.1f}" for step in steps)
              + f" {r.get('report_umap_s', float('nan')):6.1f} {r.get('report_markers_s', float('nan')):9.1f}"
              f" {str(r['clusterer']):>9} {r['ari']:5.3f} {r.get('ari_unrefined', float('nan')):9.3f}")


def print_training_table(results: list[dict], methods: list[str], cluster: bool) -> None:
    print(f"\n{'method':9} {'cells':>9} {'mode':9} {'steps/ep':>8} {'s/epoch':>8} {'preproc s':>9} {'graph s':>7} "
          f"{'read s':>6} {'peak GB':>7}" + (f" {'cluster s':>9} {'ARI':>5}" if cluster else ""))
    for r in results:
        print(f"{r['method']:9} {r['n_cells']:>9} {r['mode']:9} {r['steps_per_epoch']:8.1f} {r['seconds_per_epoch']:8.2f} "
              f"{r.get('preprocess_s', float('nan')):9.1f} {r.get('graph_s', float('nan')):7.1f} {r['read_s']:6.1f} "
              f"{r['peak_rss_mb'] / 1024:7.2f}" + (f" {r['cluster_s']:9.1f} {r['ari']:5.3f}" if cluster else ""))
    by_size = {(r["method"], r["n_cells"]): r["seconds_per_epoch"] for r in results}
    for method in methods:
        if (method, 50_000) in by_size and (method, 200_000) in by_size:
            print(f"{method}: seconds per epoch 200k / 50k = {by_size[method, 200_000] / by_size[method, 50_000]:.2f} "
                  "(linear: 4)")


if __name__ == "__main__":
    sys.exit(main())
