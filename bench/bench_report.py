"""Time the per-sample report and the GO enrichment fallback.

    python bench/bench_report.py dlpfc [--shared ../shared]   # report of DLPFC 151673 end to end, with step timings
    python bench/bench_report.py go                           # annotation load (cold, cached) and enrichment speed

Numbers go to stdout as one JSON line per measurement; docs/methods.md records the ones measured.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_dlpfc(shared: Path, engine: str) -> None:
    from spatialdomains.report import render_report

    folder = shared / "data" / "dlpfc_151673"
    scale = json.loads((folder / "spatial" / "scalefactors_json.json").read_text())["tissue_lowres_scalef"]
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        render_report(folder / "dlpfc_151673.h5ad", Path(work) / "report.html", n_domains=7, engine=engine,
                      outputs_dir=work, image=folder / "spatial" / "tissue_lowres_image.png", image_scale=scale)
        seconds = time.perf_counter() - start
        provenance = json.loads((Path(work) / "provenance.json").read_text())
        size = (Path(work) / "report.html").stat().st_size
    print(json.dumps({"bench": "report_dlpfc_151673", "seconds": round(seconds, 1), "html_mb": round(size / 2**20, 2),
                      "steps": provenance["timings_seconds"], "engine": provenance["enrichment"]["engine"]}))


def bench_go() -> None:
    import numpy as np

    import spatialdomains as sd
    from spatialdomains.analysis import annotation, enrich_go

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        annotation.go_gene_sets("BP", key_type="SYMBOL", cache_dir=cache)
        cold = time.perf_counter() - start
        annotation.clear_memory_cache()
        start = time.perf_counter()
        annotation.go_gene_sets("BP", key_type="SYMBOL", cache_dir=cache)
        warm = time.perf_counter() - start
        adata = sd.datasets.simulate_visium(3000, 8, seed=0)
        adata.obs["domain"] = adata.obs["ground_truth"]
        markers = sd.analysis.markers(adata)
        start = time.perf_counter()
        result = enrich_go(markers, universe=adata.var_names, engine="fallback", cache_dir=cache)
        seconds = time.perf_counter() - start
    ranks = []
    for domain, term in zip(adata.uns["simulation"]["domains"], adata.uns["simulation"]["go_id"]):
        ids = result.loc[result["domain"] == domain, "ID"].tolist()
        ranks.append(ids.index(term) + 1 if term in ids else None)
    print(json.dumps({"bench": "go_fallback", "annotation_cold_s": round(cold, 2), "annotation_cached_s": round(warm, 2),
                      "enrich_8_domains_s": round(seconds, 2), "planted_term_rank": ranks,
                      "median_terms": float(np.median(result.groupby("domain").size()))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["dlpfc", "go"])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--engine", default="fallback", choices=["auto", "clusterProfiler", "fallback"])
    args = parser.parse_args()
    if args.what == "dlpfc":
        bench_dlpfc(args.shared, args.engine)
    else:
        bench_go()


if __name__ == "__main__":
    main()
