"""Benchmark the analyses beyond domains on the shared real data. Usage (repository root):

    .venv/bin/python bench/bench_analyses.py pseudotime [--methods staig spotscape] [--seeds 0] [--json F]
    .venv/bin/python bench/bench_analyses.py transfer [--methods staig spotscape] [--seeds 0] [--json F]
    .venv/bin/python bench/bench_analyses.py imputation [--methods spotscape spami] [--seeds 0] [--json F]
    .venv/bin/python bench/bench_analyses.py resampling [--seeds 0 1 2] [--json F]
    .venv/bin/python bench/bench_analyses.py scale [--sizes 10000 50000 200000] [--json F]

pseudotime: DLPFC 151673, each method's embedding (full training), pseudotime from SpaceFlow's automatic root and
from the white matter, Spearman with the layer order WM → L6 → … → L1 (the Spotscape paper's figure 15 measure);
the number of domains chosen by silhouette and by stability on the same embedding.
transfer: STARmap mPFC, the three sections embedded jointly, layers transferred from each section to each other
one, ARI against the query's own layers.
imputation: 10% of the non-zero counts held back, the method trained on the rest (default settings), RMSE and
median L1 at the held-back entries against the per-gene mean: Spotscape on DLPFC 151673; SpaMI on the paired RNA +
protein simulation (SpaMosaic's, 1,296 spots), RNA and protein held back in turn.
resampling: DLPFC 151673, STAIG with n_resamples 0 (published) and 10, seven domains by mclust; the ARI of
each seed, whose spread across seeds is what resampling should narrow.
scale: seconds and peak memory of pseudotime, slice matching (the spots split into two slices) and the stability
choice of the number of domains (2..10) on a synthetic 64-d embedding of N spots, each size in its own process.
The data are read from ../shared/data (or $SPATIALDOMAINS_SHARED/data).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from _bench import DLPFC, DLPFC_LABEL, SHARED, require

STARMAP = SHARED / "data" / "starmap_mpfc" / "starmap_mpfc.h5ad"
PAIR = SHARED / "data" / "sim_multiomics_rna_adt"
LAYER_ORDER = ["WM", "Layer6", "Layer5", "Layer4", "Layer3", "Layer2", "Layer1"]


def pseudotime_run(method: str, seed: int) -> dict:
    import anndata as ad
    import numpy as np

    import spatialdomains as sd

    adata = ad.read_h5ad(DLPFC)
    started = time.perf_counter()
    getattr(sd.tl, method)(adata, random_state=seed, progress=False)
    train_seconds = time.perf_counter() - started
    key = f"X_{method}"
    sd.tl.cluster(adata, use_rep=key, n_domains=7, random_state=seed)
    result = {"method": method, "seed": seed, "train_seconds": train_seconds,
              "ari_7_domains": sd.metrics.ari(adata.obs[DLPFC_LABEL], adata.obs["domain"])}
    # The white-matter root: the most outlying spot of the annotated WM (the annotation only picks the end).
    adata.obs["annotation"] = adata.obs[DLPFC_LABEL].astype(str)
    spaces = [key, f"{key}_encoder"] if f"{key}_encoder" in adata.obsm else [key]
    for space in spaces:
        for name, options in (("automatic root", {}), ("white-matter root", {"root_domain": "WM",
                                                                            "domain_key": "annotation"})):
            started = time.perf_counter()
            sd.tl.pseudotime(adata, use_rep=space, random_state=seed, **options)
            result[f"spearman {space} ({name})"] = sd.metrics.pseudotime_spearman(
                adata.obs["pseudotime"], adata.obs[DLPFC_LABEL], LAYER_ORDER)
            result[f"seconds {space} ({name})"] = time.perf_counter() - started
    for rule in ("silhouette", "stability"):
        started = time.perf_counter()
        sd.tl.cluster(adata, use_rep=key, choose_by=rule, random_state=seed, key_added=f"domain_{rule}")
        result[f"n_domains by {rule}"] = int(adata.uns["spatialdomains"]["cluster"]["n_domains"])
        result[f"ari ({rule})"] = sd.metrics.ari(adata.obs[DLPFC_LABEL], adata.obs[f"domain_{rule}"])
        result[f"seconds ({rule})"] = time.perf_counter() - started
    result["unreachable"] = int(np.isnan(adata.obs["pseudotime"]).sum())
    return result


def transfer_run(method: str, seed: int) -> dict:
    import anndata as ad

    import spatialdomains as sd

    tissue = ad.read_h5ad(STARMAP)
    slices = {name: tissue[tissue.obs["slice_id"] == name].copy() for name in ("BZ5", "BZ9", "BZ14")}
    started = time.perf_counter()
    getattr(sd.tl, method)(slices, random_state=seed, progress=False)
    result = {"method": method, "seed": seed, "train_seconds": time.perf_counter() - started, "pairs": {}}
    for reference_name, reference in slices.items():
        for query_name, query in slices.items():
            if query_name == reference_name:
                continue
            sd.tl.transfer_labels(reference, query, label_key="layer", use_rep=f"X_{method}", random_state=seed)
            scores = query.uns["spatialdomains"]["transfer_labels"]["scores"]
            result["pairs"][f"{reference_name} -> {query_name}"] = scores["ari"]
    values = list(result["pairs"].values())
    result["mean_ari"] = sum(values) / len(values)
    return result


def imputation_run(method: str, seed: int) -> list[dict]:
    """Spotscape on DLPFC; SpaMI on the paired RNA + protein simulation, each modality held back in turn."""
    import anndata as ad

    import spatialdomains as sd

    if method == "spami":
        pair = {"rna": ad.read_h5ad(PAIR / "adata_RNA.h5ad"), "adt": ad.read_h5ad(PAIR / "adata_ADT.h5ad")}
        return [{"method": method, "data": "sim_multiomics_rna_adt",
                 **sd.tl.evaluate_imputation(pair, method=method, modality=modality, fraction=0.1,
                                             random_state=seed, progress=False)} for modality in ("rna", "adt")]
    adata = ad.read_h5ad(DLPFC)
    return [{"method": method, "data": "dlpfc_151673",
             **sd.tl.evaluate_imputation(adata, method=method, fraction=0.1, random_state=seed, progress=False)}]


def resampling_run(method: str, seed: int) -> dict:
    import anndata as ad

    import spatialdomains as sd

    result = {"method": method, "seed": seed}
    for n in (0, 10):
        adata = ad.read_h5ad(DLPFC)
        started = time.perf_counter()
        sd.find_domains(adata, "staig", n_domains=7, n_resamples=n, random_state=seed, progress=False)
        result[f"ari (n_resamples={n})"] = sd.metrics.ari(adata.obs[DLPFC_LABEL], adata.obs["domain"])
        result[f"seconds (n_resamples={n})"] = time.perf_counter() - started
    return result


def scale_run(n_spots: int) -> dict:
    """One size: a 64-d embedding along a noisy arc (one connected gradient), cut into 8 groups along it."""
    import numpy as np
    import anndata as ad

    import spatialdomains as sd
    from _bench import peak_rss_mb

    rng = np.random.default_rng(0)
    position = rng.random(n_spots)
    basis = rng.normal(size=(3, 64))
    embedding = (np.c_[np.cos(3 * position), np.sin(3 * position), 0.5 * position] @ basis
                 + 0.1 * rng.normal(size=(n_spots, 64))).astype(np.float32)
    adata = ad.AnnData(obs={"group": (np.floor(8 * position)).astype(int).astype(str)})
    adata.obs_names = [f"s{i}" for i in range(n_spots)]
    adata.obsm["X_toy"] = embedding
    adata.obsm["spatial"] = np.c_[position * 1000, rng.random(n_spots) * 1000]
    result = {"n_spots": n_spots}
    started = time.perf_counter()
    sd.tl.pseudotime(adata, use_rep="X_toy")
    result["pseudotime_seconds"] = time.perf_counter() - started
    result["pseudotime_spearman"] = sd.metrics.pseudotime_spearman(adata.obs["pseudotime"], adata.obs["group"],
                                                                   [str(g) for g in range(8)])
    half = np.arange(n_spots) % 2 == 0
    reference, query = adata[half].copy(), adata[~half].copy()
    started = time.perf_counter()
    sd.tl.transfer_labels(reference, query, label_key="group", use_rep="X_toy")
    result["transfer_seconds"] = time.perf_counter() - started
    result["transfer_search"] = query.uns["spatialdomains"]["transfer_labels"]["search"]
    result["transfer_ari"] = query.uns["spatialdomains"]["transfer_labels"]["scores"]["ari"]
    started = time.perf_counter()
    scores = sd.cluster.stability(embedding, range(2, 11))
    result["stability_seconds"] = time.perf_counter() - started
    result["stability_choice"] = sd.cluster.most_detailed_stable(scores)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["pseudotime", "transfer", "imputation", "resampling", "scale", "one-size"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 50_000, 200_000])
    parser.add_argument("--methods", nargs="+", default=["staig", "spotscape"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.what == "one-size":  # a child process of 'scale': its own peak memory
        print(json.dumps(scale_run(args.sizes[0])))
        return 0
    if args.what == "scale":
        from _bench import run_child

        results = []
        for size in args.sizes:
            results.append(run_child(__file__, ["one-size", "--sizes", str(size)]))
            print(json.dumps(results[-1]), flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=1)
        return 0
    if not require(STARMAP if args.what == "transfer" else DLPFC) or (
            args.what == "imputation" and "spami" in args.methods and not require(PAIR)):
        return 1
    run = {"pseudotime": pseudotime_run, "transfer": transfer_run, "imputation": imputation_run,
           "resampling": resampling_run}[args.what]
    if args.what == "imputation":
        args.methods = [method for method in args.methods if method in sd_imputing_methods()]
    if args.what == "resampling":
        args.methods = ["staig"]
    results = []
    for method in args.methods:
        for seed in args.seeds:
            for result in run(method, seed) if args.what == "imputation" else [run(method, seed)]:
                results.append(result)
                print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


def sd_imputing_methods() -> tuple[str, ...]:
    from spatialdomains import methods

    return tuple(name for name, known in methods.capabilities().items() if known["decodes"])


if __name__ == "__main__":
    sys.exit(main())
