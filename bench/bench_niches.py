"""Niches at cell resolution: how each method's settings presets find them, with and without refinement.

    python bench/bench_niches.py simulated [--methods staig spami] [--presets paper cells] [--size 50000] [--seeds 0]
    python bench/bench_niches.py starmap [--presets paper cells] [--seeds 0 1 2]

``simulated``: Xenium-like cells (``sd.datasets.simulate_cells``; for SpaMI ``simulate_paired_cells``, the same
RNA plus 30 proteins; the data are always seed 0's, ``--seeds`` seed the training), the large-data mode
with its default steps. For each method and preset (a preset a
method does not have is skipped), the embedding is clustered into the 6 planted niches with mclust and k-means,
and each partition is scored (ARI) as it is and after the majority vote over each cell's 15 nearest cells.
``starmap``: STAIG on each of the three STARmap mPFC sections (cells, 4 cortical layers), mclust, ARI against
the layers per seed. One JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _bench import SHARED

NICHES, CELL_TYPES, GENES, PROTEINS = 6, 12, 500, 30
STARMAP = SHARED / "data" / "starmap_mpfc" / "starmap_mpfc.h5ad"


def simulated(method: str, preset: str, n_cells: int, seed: int) -> dict:
    import spatialdomains as sd
    from spatialdomains.cluster import refine_labels

    if method == "spami":
        data = sd.datasets.simulate_paired_cells(n_cells, NICHES, CELL_TYPES, GENES, PROTEINS, seed=0)
    else:
        data = sd.datasets.simulate_cells(n_cells, NICHES, CELL_TYPES, GENES, seed=0)
    started = time.perf_counter()
    getattr(sd.tl, method)(data, preset=preset, random_state=seed, progress=False)
    result = {"method": method, "preset": preset, "n_cells": n_cells, "seed": seed,
              "train_s": round(time.perf_counter() - started, 1)}
    truth = data.obs["ground_truth"].astype(str).to_numpy()
    coordinates = data.obsm["spatial"] if "spatial" in data.obsm else data.mod["rna"].obsm["spatial"]
    holder = data if method != "spami" else _embedding_holder(data, f"X_{method}")
    for clusterer in ("mclust", "kmeans"):
        sd.tl.cluster(holder, use_rep=f"X_{method}", method=clusterer, n_domains=NICHES, refine=False,
                      key_added="niche")
        labels = holder.obs["niche"].astype(str).to_numpy()
        result[clusterer] = round(sd.metrics.ari(truth, labels), 3)
        result[f"{clusterer}_refined"] = round(sd.metrics.ari(truth, refine_labels(labels, coordinates, 15)), 3)
    return result


def _embedding_holder(data, key: str):
    """An AnnData of the MuData's cells with the fused embedding and the coordinates, for clustering."""
    import anndata as ad

    holder = ad.AnnData(obs=data.obs[[]].copy())
    holder.obsm[key] = np.asarray(data.obsm[key])
    holder.obsm["spatial"] = np.asarray(data.mod["rna"].obsm["spatial"])
    return holder


def starmap(preset: str, seeds: list[int]) -> list[dict]:
    import anndata as ad
    import pandas as pd

    import spatialdomains as sd

    sections = ad.read_h5ad(STARMAP)
    results = []
    for section in pd.unique(sections.obs["slice_id"].astype(str)):
        scores = []
        for seed in seeds:
            cells = sections[sections.obs["slice_id"] == section].copy()
            sd.find_domains(cells, "staig", 4, preset=preset, random_state=seed, progress=False)
            scores.append(round(sd.metrics.ari(cells.obs["layer"], cells.obs["domain"]), 3))
        results.append({"dataset": "starmap", "section": str(section), "preset": preset, "seeds": seeds,
                        "ari": scores, "mean": round(float(np.mean(scores)), 3)})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["simulated", "starmap"])
    parser.add_argument("--methods", nargs="+", default=["staig", "spami"])
    parser.add_argument("--presets", nargs="+", default=["paper", "default", "cells"])
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="training seeds (default: 0 for simulated, 0 1 2 for starmap)")
    args = parser.parse_args()
    from spatialdomains import methods

    if args.dataset == "starmap":
        args.seeds = args.seeds or [0, 1, 2]
        for preset in args.presets:
            if preset in methods.get("staig").preset_names():
                for result in starmap(preset, args.seeds):
                    print(json.dumps(result), flush=True)
        return 0
    args.seeds = args.seeds or [0]
    for method in args.methods:
        for preset in args.presets:
            if preset in methods.get(method).preset_names():
                for seed in args.seeds:
                    print(json.dumps(simulated(method, preset, args.size, seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
