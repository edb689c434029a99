"""Seconds per epoch of each method on an idle machine and beside busy processes, from Python and from R.

    python bench/bench_load.py                        # every method and door, idle / 1 / 2 busy processes
    python bench/bench_load.py --threads 2 --doors python --busy 0 1   # torch's old default: all cores
    PYTHONPATH=OLD_CHECKOUT/python python bench/bench_load.py --busy 0 1   # an older version, for before/after

Each measurement runs in a child process (Python, or Rscript with the installed R package); the busy processes
are plain Python loops started just before it and stopped after. STAIG and Spotscape train on DLPFC 151673,
SpaMI on the simulated RNA + ADT pair (from R: the RNA as the main experiment, the ADT as its altExp). The table
gives seconds per epoch, the slow-down against the same door when idle, and R against Python.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from _bench import DLPFC, SHARED, busy_processes, require

PAIR = SHARED / "data" / "sim_multiomics_rna_adt"
EPOCHS = {"staig": 20, "spotscape": 20, "spami": 200}
R_DOOR = {"staig": "runSTAIG", "spotscape": "runSpotscape", "spami": "runSpaMI"}
R_RECORD = {"staig": "STAIG", "spotscape": "Spotscape", "spami": "SpaMI"}

R_SCRIPT = r"""
suppressPackageStartupMessages(library(spatialdomains))
args <- commandArgs(trailingOnly = TRUE)
door <- get(args[1]); epochs <- as.integer(args[2]); record <- args[3]; paths <- strsplit(args[4], ";")[[1]]
threads <- if (nzchar(args[5])) as.integer(args[5]) else NULL
counts_of <- function(path, order = NULL) {
    data <- reticulate::py_run_string(paste(sep = "\n",
        "import anndata, numpy, scipy.sparse",
        sprintf("adata = anndata.read_h5ad(%s)", encodeString(path, quote = '"')),
        if (is.null(order)) "" else sprintf("adata = adata[[%s]]", paste0("'", order, "'", collapse = ",")),
        "counts = scipy.sparse.csc_matrix(adata.X.T, dtype=numpy.float64)",
        "i, p, x, dim = counts.indices, counts.indptr, counts.data, list(counts.shape)",
        "genes, spots = adata.var_names.tolist(), adata.obs_names.tolist()",
        "xy = numpy.asarray(adata.obsm['spatial'], dtype=numpy.float64)"), local = TRUE, convert = TRUE)
    list(counts = methods::new("dgCMatrix", i = as.integer(data$i), p = as.integer(data$p), x = as.numeric(data$x),
                               Dim = as.integer(unlist(data$dim)),
                               Dimnames = list(unlist(data$genes), unlist(data$spots))), xy = data$xy)
}
main <- counts_of(paths[1])
sce <- SingleCellExperiment::SingleCellExperiment(assays = list(counts = main$counts),
                                                  reducedDims = list(spatial = main$xy))
if (length(paths) > 1) {  # paired omics: the second modality, in the same spot order, as the altExp
    SingleCellExperiment::mainExpName(sce) <- "rna"
    second <- counts_of(paths[2], colnames(sce))
    SingleCellExperiment::altExp(sce, "adt") <- SingleCellExperiment::SingleCellExperiment(
        assays = list(counts = second$counts))
}
cat("READY\n"); flush(stdout())
invisible(readLines(file("stdin"), n = 1L))
sce <- door(sce, n_epochs = epochs, seed = 0, progress = FALSE, n_threads = threads)
out <- S4Vectors::metadata(sce)$spatialdomains[[record]]
cat(jsonlite::toJSON(list(seconds_per_epoch = out$training$train_seconds / out$training$epochs_run,
                          threads = out$threads), auto_unbox = TRUE, null = "null"), "\n")
"""


def child(method: str, epochs: int, threads: int | None) -> None:
    """Load the data, say READY, wait for the go (the busy processes are running by then), train, report."""
    import anndata as ad

    import spatialdomains as sd

    if method == "spami":
        data = {"rna": ad.read_h5ad(PAIR / "adata_RNA.h5ad"), "adt": ad.read_h5ad(PAIR / "adata_ADT.h5ad")}
    else:
        data = ad.read_h5ad(DLPFC)
    print("READY", flush=True)
    sys.stdin.readline()
    result = getattr(sd.tl, method)(data, n_epochs=epochs, progress=False, n_threads=threads)
    record = (data if result is None else result).uns["spatialdomains"][method]
    print(json.dumps({"seconds_per_epoch": record["training"]["train_seconds"] / record["training"]["epochs_run"],
                      "threads": record.get("threads")}))


def measure(door: str, method: str, busy: int, threads: int | None, epochs: int) -> dict:
    """One child run beside ``busy`` busy processes; returns its JSON line."""
    if door == "python":
        command = [sys.executable, __file__, "--child", method, str(epochs), str(threads or "")]
    else:
        data = f"{PAIR / 'adata_RNA.h5ad'};{PAIR / 'adata_ADT.h5ad'}" if method == "spami" else str(DLPFC)
        command = ["Rscript", "-e", R_SCRIPT, R_DOOR[method], str(epochs), R_RECORD[method], data,
                   str(threads or "")]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    while process.stdout.readline().strip() != "READY":
        if process.poll() is not None:
            raise RuntimeError(f"{door} {method}: the child ended before training ({' '.join(command[:3])} ...)")
    with busy_processes(busy):
        output, _ = process.communicate("go\n", timeout=3600)
    return json.loads(output.strip().splitlines()[-1])


def r_door_available() -> str | None:
    """None when Rscript and the installed R package can run; else why not."""
    if shutil.which("Rscript") is None:
        return "Rscript not found"
    check = subprocess.run(["Rscript", "-e", "cat(requireNamespace('spatialdomains', quietly = TRUE) && "
                                             "spatialdomains::spatialdomainsAvailable())"],
                           capture_output=True, text=True)
    return None if check.stdout.strip().endswith("TRUE") else (
        "the R package is not installed with its Python (R CMD INSTALL . and set RETICULATE_PYTHON)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(EPOCHS), choices=list(EPOCHS))
    parser.add_argument("--doors", nargs="+", default=["python", "r"], choices=["python", "r"])
    parser.add_argument("--busy", nargs="+", type=int, default=[0, 1, 2], help="busy processes beside the run")
    parser.add_argument("--threads", type=int, help="fixed CPU threads (default: the run chooses)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, epochs, threads = args.child
        child(method, int(epochs), int(threads) if threads else None)
        return 0
    if not require(DLPFC) or ("spami" in args.methods and not require(PAIR)):
        return 1
    doors = list(args.doors)
    if "r" in doors and (reason := r_door_available()):
        print(f"R door skipped: {reason}", file=sys.stderr)
        doors.remove("r")
    print(f"{os.cpu_count()} cores; threads: {args.threads or 'chosen by the run'}")
    print(f"{'door':7} {'method':10} {'busy':>4} {'s/epoch':>8} {'vs idle':>8} {'R/Python':>8}  threads (torch/BLAS: why)")
    rows: dict[tuple, float] = {}
    for method in args.methods:
        for door in doors:
            for busy in args.busy:
                result = measure(door, method, busy, args.threads, EPOCHS[method])
                seconds = result["seconds_per_epoch"]
                rows[door, method, busy] = seconds
                idle = rows.get((door, method, 0))
                python = rows.get(("python", method, busy))
                plan = result.get("threads") or {}  # older versions did not record their threads
                print(f"{door:7} {method:10} {busy:>4} {seconds:8.3f} "
                      f"{seconds / idle if idle else float('nan'):8.2f} "
                      f"{seconds / python if door == 'r' and python else float('nan'):8.2f}  "
                      + (f"{plan['torch']}/{plan['blas']}: {plan['reason']}" if plan else "not recorded"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
