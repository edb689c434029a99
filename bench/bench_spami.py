"""Benchmark SpaMI: the shared simulated RNA + protein pair (1,296 spots, 5 domains: training time, peak memory
and ARI over seeds, with the package's defaults or the published scale) and simulated pairs of any size
(time per epoch and peak memory). Each measurement runs in its own process so that peak RSS is its own.
Usage (repository root):

    .venv/bin/python bench/bench_spami.py sim [--epochs 1000] [--seeds 0 1 2] [--published-scale] [--json F]
    .venv/bin/python bench/bench_spami.py ablation [--seed 0] [--json F]
    .venv/bin/python bench/bench_spami.py size [--sizes 1296 20000] [--epochs 100] [--json F]

``ablation`` trains one seed under each setting of ABLATIONS (the published scale with one change at a time,
then the package's balanced default with the same changes), to find what makes the published defaults fall
short on the shared pair.

The shared pair is read from ../shared/data (or $SPATIALDOMAINS_SHARED/data).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _bench import SHARED, check_floor, mean_sd, peak_rss_mb, require, run_child

PAIR = SHARED / "data" / "sim_multiomics_rna_adt"
LABEL = "ground_truth"
CLUSTERERS = ("mclust", "gmm", "kmeans")
#: name → tl.spami arguments; each changes one thing from the published scale or from the balanced default.
ABLATIONS = {
    "published scale": {"balance": False},
    "published scale, k = 6": {"balance": False, "n_neighbors": 6},
    "published scale, k = 8": {"balance": False, "n_neighbors": 8},
    "published scale, 300 epochs": {"balance": False, "n_epochs": 300},
    "published scale, no correspondence": {"balance": False, "correspondence_weight": 0.0},
    "published scale, no DGI": {"balance": False, "dgi_weights": (0.0, 0.0)},
    "published scale, no reconstruction": {"balance": False, "reconstruction_weights": (0.0, 0.0)},
    "published scale, ADT reconstruction ×18": {"balance": False, "reconstruction_weights": (10.0, 180.0)},
    "balanced (default)": {},
    "balanced, k = 6": {"n_neighbors": 6},
    "balanced, 300 epochs": {"n_epochs": 300},
    "balanced, out_dim 20": {"out_dim": 20},
}


def sim_run(epochs: int, seed: int, params: dict) -> dict:
    import anndata as ad

    import spatialdomains as sd

    modal = {"rna": ad.read_h5ad(PAIR / "adata_RNA.h5ad"), "adt": ad.read_h5ad(PAIR / "adata_ADT.h5ad")}
    labels = modal["rna"].obs[LABEL]
    started = time.perf_counter()
    result = sd.tl.spami(modal, **{"n_epochs": epochs, **params}, random_state=seed, progress=False)
    end_to_end = time.perf_counter() - started
    training = result.uns["spatialdomains"]["spami"]["training"]
    run = {"seed": seed, "params": params, "epochs": int(training["epochs_run"]),
           "train_seconds": float(training["train_seconds"]), "end_to_end_seconds": end_to_end,
           "peak_rss_mb": peak_rss_mb(), "device": training["device"],
           "attention_mean": result.obsm["spami_attention"].mean(axis=0).tolist()}
    for method in CLUSTERERS:
        sd.tl.cluster(result, use_rep="X_spami", n_domains=5, method=method, refine=False, key_added=method)
        run[f"ari_{method}"] = sd.metrics.ari(labels.to_numpy(), result.obs[method].to_numpy())
    sd.tl.leiden(result, use_rep="X_spami", resolution=0.4, key_added="published")  # the paper's protocol
    run["ari_published_leiden"] = sd.metrics.ari(labels.to_numpy(), result.obs["published"].to_numpy())
    run["n_domains_published_leiden"] = int(result.obs["published"].nunique())
    for name in ("rna", "adt"):  # each omics' own embedding under the same clusterer
        sd.tl.cluster(result, use_rep=f"X_spami_{name}", n_domains=5, method="mclust", refine=False, key_added=name)
        run[f"ari_mclust_{name}_only"] = sd.metrics.ari(labels.to_numpy(), result.obs[name].to_numpy())
    floor = sd.tl.baseline(modal, random_state=seed)
    sd.tl.cluster(floor, use_rep="X_baseline", n_domains=5, method="kmeans", refine=False)
    run["ari_baseline_kmeans"] = sd.metrics.ari(labels.to_numpy(), floor.obs["domain"].to_numpy())
    return run


def size_run(n_spots: int, epochs: int) -> dict:
    import spatialdomains as sd

    mdata = sd.datasets.simulate_multiomics(n_spots, 5, second="adt", seed=0)
    before = peak_rss_mb()
    sd.tl.spami(mdata, n_epochs=epochs, progress=False)
    training = mdata.uns["spatialdomains"]["spami"]["training"]
    return {"n_spots": mdata.n_obs, "epochs": epochs, "seconds_per_epoch": float(training["seconds_per_epoch"]),
            "train_seconds": float(training["train_seconds"]), "rss_after_simulation_mb": before,
            "peak_rss_mb": peak_rss_mb(), "timings": {k: float(v) for k, v in
                                                       mdata.uns["spatialdomains"]["spami"]["timings"].items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("sim")
    sim.add_argument("--epochs", type=int, default=1000)
    sim.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sim.add_argument("--published-scale", action="store_true", help="train without balancing the modalities")
    sim.add_argument("--json")
    sim.add_argument("--floor", type=float, help="exit 1 when the mean mclust ARI is below this (make accuracy)")
    ablation = commands.add_parser("ablation")
    ablation.add_argument("--epochs", type=int, default=1000)
    ablation.add_argument("--seed", type=int, default=0)
    ablation.add_argument("--json")
    size = commands.add_parser("size")
    size.add_argument("--sizes", type=int, nargs="+", default=[1296, 20000])
    size.add_argument("--epochs", type=int, default=100)
    size.add_argument("--json")
    one = commands.add_parser("one", help=argparse.SUPPRESS)  # internal: one measurement, printed as JSON
    one.add_argument("what", nargs="+")
    args = parser.parse_args()

    if args.command == "one":
        kind, *rest = args.what
        if kind == "sim":
            print(json.dumps(sim_run(int(rest[0]), int(rest[1]), json.loads(rest[2]))))
        else:
            print(json.dumps(size_run(int(rest[0]), int(rest[1]))))
        return 0

    if args.command == "sim":
        if not require(PAIR):
            return 2
        balance = not args.published_scale
        runs = []
        for seed in args.seeds:
            run = run_child(__file__, ["one", "sim", str(args.epochs), str(seed), json.dumps({"balance": balance})])
            runs.append(run)
            print(f"seed {seed}: train {run['train_seconds']:.1f} s, end to end {run['end_to_end_seconds']:.1f} s, "
                  f"peak RSS {run['peak_rss_mb']:.0f} MB, ARI mclust {run['ari_mclust']:.3f} / gmm "
                  f"{run['ari_gmm']:.3f} / kmeans {run['ari_kmeans']:.3f} (RNA only {run['ari_mclust_rna_only']:.3f},"
                  f" ADT only {run['ari_mclust_adt_only']:.3f}; baseline {run['ari_baseline_kmeans']:.3f}), "
                  f"attention {[round(a, 3) for a in run['attention_mean']]}", flush=True)
        keys = ["train_seconds", "end_to_end_seconds", "peak_rss_mb", *[f"ari_{m}" for m in CLUSTERERS],
                "ari_published_leiden", "n_domains_published_leiden",
                "ari_mclust_rna_only", "ari_mclust_adt_only", "ari_baseline_kmeans"]
        report = {"dataset": "sim_multiomics_rna_adt", "epochs": args.epochs, "balance": balance, "runs": runs,
                  "summary": {k: mean_sd([r[k] for r in runs]) for k in keys}}
        print(f"\nSpaMI on the simulated RNA + ADT pair, {args.epochs} epochs, "
              f"{'balanced' if balance else 'published'} scale, {len(runs)} seeds ({runs[0]['device']}):")
        for key, (mean, sd) in report["summary"].items():
            print(f"  {key:>22}: {mean:.3f} ± {sd:.3f}")
    elif args.command == "ablation":
        report = {"dataset": "sim_multiomics_rna_adt", "seed": args.seed, "runs": {}}
        print(f"{'setting':>42}  mclust   gmm  kmeans  RNA-only ADT-only  attention (RNA, ADT)  train s")
        for name, params in ABLATIONS.items():
            run = run_child(__file__, ["one", "sim", str(args.epochs), str(args.seed), json.dumps(params)])
            report["runs"][name] = run
            print(f"{name:>42}  {run['ari_mclust']:.3f}  {run['ari_gmm']:.3f}  {run['ari_kmeans']:.3f}   "
                  f"{run['ari_mclust_rna_only']:.3f}    {run['ari_mclust_adt_only']:.3f}    "
                  f"{run['attention_mean'][0]:.3f}, {run['attention_mean'][1]:.3f}        "
                  f"{run['train_seconds']:.1f}", flush=True)
    else:
        report = {"runs": []}
        for n in args.sizes:
            run = run_child(__file__, ["one", "size", str(n), str(args.epochs)])
            report["runs"].append(run)
            print(f"N={run['n_spots']:>6}: {run['seconds_per_epoch'] * 1000:.1f} ms/epoch "
                  f"({run['epochs']} epochs; 1000 epochs ≈ {run['seconds_per_epoch'] * 1000:.0f} s), peak RSS "
                  f"{run['peak_rss_mb']:.0f} MB (after simulating {run['rss_after_simulation_mb']:.0f} MB)",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.command == "sim":
        return 0 if check_floor("SpaMI simulated RNA + ADT mean ARI (mclust)", report["summary"]["ari_mclust"][0],
                                args.floor) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
