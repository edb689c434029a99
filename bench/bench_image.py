"""Measure STAIG's image path: feature-extraction speed, and what the image adds to domain detection.

    python bench/bench_image.py extract --backbone resnet18 [--n-patches 3600] [--device cpu]
    python bench/bench_image.py dlpfc [--seeds 0 1 2] [--shared ../shared]     # ARI with and without the H&E
    python bench/bench_image.py simulated [--seeds 1 2 3]                        # texture carries the signal
    python bench/bench_image.py end-to-end [--busy 0 1]      # `spatialdomains run --image` on DLPFC, idle / busy

``extract`` cuts ``--n-patches`` patches from a simulated 3,600-spot slide image (patch 92 px, like a Visium
hires image) and times filtering, one BYOL epoch and embedding. ``end-to-end`` times the command line a user
runs (read, image features, STAIG, clustering, outputs) on DLPFC 151673 with its H&E image, on an idle machine
and beside busy processes, with the time of each step from the run's provenance. One JSON line per measurement
on stdout; docs/methods.md and docs/load.md record the numbers measured.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def bench_extract(backbone: str, n_patches: int, device: str, input_px: int | None) -> None:
    import spatialdomains as sd

    adata = sd.datasets.simulate_visium(3600, 5, seed=0, image=True)[:n_patches].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random initialisation: speed does not depend on weights
        start = time.perf_counter()
        sd.tl.image_features(adata, backbone=backbone, device=device, input_px=input_px, progress=False)
        seconds = time.perf_counter() - start
    record = adata.uns["spatialdomains"]["image_features"]
    print(json.dumps({"bench": "image_features", "backbone": backbone, "n_patches": adata.n_obs,
                      "input_px": int(record["settings"]["input_px"]), "device": record["device"],
                      "seconds": round(seconds, 1),
                      "steps": {k: round(float(v), 1) for k, v in record["timings"].items()},
                      "byol_loss_first_last": [round(float(record["byol_losses"][0]), 3),
                                               round(float(record["byol_losses"][-1]), 3)]}), flush=True)


def bench_end_to_end(shared: Path, busy_counts: list[int]) -> None:
    import shutil
    import subprocess
    import sys
    import tempfile

    from _bench import busy_processes

    data = shared / "data" / "dlpfc_151673" / "dlpfc_151673.h5ad"
    program = Path(sys.executable).with_name("spatialdomains")
    idle = None
    for busy in busy_counts:
        scratch = Path(tempfile.mkdtemp(prefix="bench-image-"))
        try:
            command = [str(program), "run", str(data), "--image", "--n-domains", "7", "--seed", "0",
                       "--library-size-key", "sum_umi_allgenes", "--label-key", "layer_guess_reordered",
                       "--out", str(scratch / "out"), "--quiet"]
            with busy_processes(busy):
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                seconds = time.perf_counter() - start
            record = json.loads((scratch / "out" / "provenance.json").read_text())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        idle = seconds if busy == 0 else idle
        image, staig = record["image_features"], record["staig"]
        print(json.dumps({
            "bench": "dlpfc_image_end_to_end", "busy": busy, "seconds": round(seconds, 1),
            "vs_idle": round(seconds / idle, 2) if idle else None,
            "threads": staig["threads"],
            "image_steps": {k: round(float(v), 1) for k, v in image["timings"].items()},
            "staig_steps": {k: round(float(v), 1) for k, v in staig["timings"].items()},
            "cluster_seconds": round(float(record["cluster"]["timings"]["cluster"]), 1),
            "scores": record.get("scores")}), flush=True)


def _ari_with_and_without(adata, n_domains: int, seeds: list[int], label_key: str, **staig_args) -> dict:
    """ARI (refined and unrefined) of STAIG without and with the image, one run per seed."""
    import spatialdomains as sd

    results = {}
    for use_image in (False, True):
        for seed in seeds:
            start = time.perf_counter()
            sd.tl.staig(adata, use_image=use_image, random_state=seed, progress=False, **staig_args)
            sd.tl.cluster(adata, n_domains=n_domains, use_rep="X_staig", refine=True)
            mode = "image" if use_image else "gene"
            for column, suffix in (("domain", ""), ("domain_unrefined", "_unrefined")):
                results.setdefault(mode + suffix, []).append(sd.metrics.ari(adata.obs[label_key], adata.obs[column]))
            print(json.dumps({"image": use_image, "seed": seed, "ari": round(results[mode][-1], 4),
                              "ari_unrefined": round(results[mode + "_unrefined"][-1], 4),
                              "backend": adata.uns["spatialdomains"]["cluster"].get("backend"),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    return results


def bench_dlpfc(shared: Path, seeds: list[int], backbone: str) -> None:
    import spatialdomains as sd

    adata = sd.io.read(shared / "data" / "dlpfc_151673" / "dlpfc_151673.h5ad")
    start = time.perf_counter()
    sd.tl.image_features(adata, backbone=backbone, progress=False)
    feature_seconds = time.perf_counter() - start
    record = adata.uns["spatialdomains"]["image_features"]
    print(json.dumps({"bench": "dlpfc_image_features", "seconds": round(feature_seconds, 1),
                      "image": list(record["image_sources"]), "patch_side_px": int(record["patch_sides_px"][0])}),
          flush=True)
    results = _ari_with_and_without(adata, 7, seeds, "layer_guess_reordered", library_size_key="sum_umi_allgenes")
    _summary("dlpfc_151673_staig_image", results, seeds)


def bench_simulated(seeds: list[int], fold_change: float) -> None:
    import spatialdomains as sd

    results: dict[str, list] = {}
    for seed in seeds:
        adata = sd.datasets.simulate_visium(1000, 5, seed=seed, image=True, marker_fold_change=fold_change)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sd.tl.image_features(adata, progress=False)
        for mode, scores in _ari_with_and_without(adata, 5, [seed], "ground_truth").items():
            results.setdefault(mode, []).extend(scores)
    _summary(f"simulated_texture_fold{fold_change}", results, seeds)


def _summary(name: str, results: dict, seeds: list[int]) -> None:
    print(json.dumps({"bench": name, "seeds": seeds,
                      **{f"{mode}_ari_mean": round(float(np.mean(v)), 3) for mode, v in results.items()},
                      **{f"{mode}_ari_sd": round(float(np.std(v)), 3) for mode, v in results.items()},
                      **{f"{mode}_ari": [round(x, 3) for x in v] for mode, v in results.items()}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    extract = sub.add_parser("extract")
    extract.add_argument("--backbone", default="resnet18")
    extract.add_argument("--n-patches", type=int, default=3600)
    extract.add_argument("--input-px", type=int)
    extract.add_argument("--device", default="auto")
    dlpfc = sub.add_parser("dlpfc")
    dlpfc.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    dlpfc.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    dlpfc.add_argument("--backbone", default="auto")
    end_to_end = sub.add_parser("end-to-end")
    end_to_end.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    end_to_end.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy processes beside the run")
    simulated = sub.add_parser("simulated")
    simulated.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    simulated.add_argument("--fold-change", type=float, default=1.2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.what == "extract":
        bench_extract(args.backbone, args.n_patches, args.device, args.input_px)
    elif args.what == "dlpfc":
        bench_dlpfc(args.shared, args.seeds, args.backbone)
    elif args.what == "end-to-end":
        bench_end_to_end(args.shared, args.busy)
    else:
        bench_simulated(args.seeds, args.fold_change)


if __name__ == "__main__":
    main()
