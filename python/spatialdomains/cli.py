"""Command line: ``spatialdomains run`` (a sample to domains) and ``spatialdomains demo`` (the built-in example).

Exit codes: 0 success, 2 bad input or arguments, 1 any other failure.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("spatialdomains")

OUTPUT_FILES = {
    "result": "result.h5ad",
    "domains": "domains.csv",
    "embedding": "embedding.csv",
    "plot": "domains.png",
    "provenance": "provenance.json",
}
#: Written besides the others when the input was an .rds file: the input's class with the results added.
RDS_RESULT = "result.rds"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    import matplotlib

    matplotlib.use("Agg")  # a command-line run only writes image files
    from .errors import BackendUnavailable, InputError

    try:
        return args.handler(args)
    except (InputError, FileNotFoundError) as error:
        print(f"spatialdomains: error: {error}", file=sys.stderr)
        return 2
    except BackendUnavailable as error:
        print(f"spatialdomains: error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="spatialdomains",
                                     description="Spatial domains from spatial transcriptomics.")
    parser.add_argument("--version", action="version", version=f"spatialdomains {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="find the spatial domains of one sample",
                              description="Find the spatial domains of one sample and write the result .h5ad, a "
                                          "domains CSV, the embedding, a domain plot and a provenance JSON.")
    run.add_argument("input", help=".h5ad file, .rds file (SingleCellExperiment, SpatialExperiment or Seurat) "
                                   "or Space Ranger output folder (raw counts)")
    run.add_argument("--out", required=True, help="output folder (created if needed)")
    run.add_argument("--method", default="staig", choices=["staig"], help="model (default: staig)")
    run.add_argument("--layer", help="layer with raw counts, if not X")
    run.add_argument("--library-size-key", help="obs column with true per-spot totals when X is a gene subset")
    run.add_argument("--label-key", help="obs column with reference labels: scores (ARI, NMI, ...) are reported")
    _add_model_options(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="run the whole pipeline on simulated data and score it",
                               description="Simulate a Visium-like sample with planted domains, find its domains "
                                           "and report the ARI against the planted truth.")
    demo.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    demo.add_argument("--n-spots", type=int, default=3000, help="number of simulated spots (default: 3000)")
    _add_model_options(demo, default_domains=5)
    demo.set_defaults(handler=_demo)
    return parser


def _add_model_options(parser: argparse.ArgumentParser, default_domains: int | None = None) -> None:
    parser.add_argument("--n-domains", type=int, default=default_domains,
                        help="number of domains (default: %s)" % (default_domains or "chosen by silhouette"))
    parser.add_argument("--preset", default="paper", choices=["paper", "published"], help="model settings preset")
    parser.add_argument("--epochs", type=int, help="training epochs (default: from the preset)")
    parser.add_argument("--tau", type=float, help="temperature of the contrastive loss (default: from the preset)")
    parser.add_argument("--cluster-method", default="auto", choices=["auto", "mclust", "gmm", "kmeans", "leiden"],
                        help="clustering backend (default: mclust when R has it, else gmm)")
    parser.add_argument("--refine", default="auto", choices=["auto", "yes", "no"],
                        help="majority-vote refinement over 15 nearest spots (default: auto, for lattices)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or information messages")


def _run(args: argparse.Namespace) -> int:
    from . import io

    adata = io.read(args.input)
    return _find_and_write(adata, args, label_key=args.label_key, layer=args.layer,
                           library_size_key=args.library_size_key)


def _demo(args: argparse.Namespace) -> int:
    from .datasets import simulate_visium

    adata = simulate_visium(args.n_spots, args.n_domains or 5, seed=args.seed)
    logger.info("simulated %d spots × %d genes with %d planted domains", adata.n_obs, adata.n_vars,
                args.n_domains or 5)
    return _find_and_write(adata, args, label_key="ground_truth", library_size_key="total_counts")


def _find_and_write(adata, args: argparse.Namespace, *, label_key: str | None, **method_params) -> int:
    import pandas as pd

    from . import io, metrics, pl
    from .errors import InputError
    from .tl import find_domains

    if label_key is not None and label_key not in adata.obs:
        raise InputError(f"--label-key: obs['{label_key}'] does not exist (obs columns: {', '.join(adata.obs)})")
    refine = {"auto": "auto", "yes": True, "no": False}[args.refine]
    find_domains(adata, getattr(args, "method", "staig"), args.n_domains,
                 cluster_method=args.cluster_method, refine=refine, random_state=args.seed, device=args.device,
                 progress=not args.quiet, preset=args.preset, n_epochs=args.epochs, tau=args.tau,
                 **{k: v for k, v in method_params.items() if v is not None})
    record = dict(adata.uns["spatialdomains"])
    if label_key is not None:
        scores = {"refined": metrics.evaluate(adata.obs[label_key], adata.obs["domain"])}
        if "domain_unrefined" in adata.obs:
            scores["unrefined"] = metrics.evaluate(adata.obs[label_key], adata.obs["domain_unrefined"])
        record["scores"] = {"label_key": label_key, **scores}
        for name, values in scores.items():
            print(f"{name:>9}: ARI {values['ari']:.3f}  NMI {values['nmi']:.3f}  ({values['n_scored']} spots scored)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    columns = [c for c in ("domain", "domain_unrefined") if c in adata.obs]
    table = adata.obs[columns].copy()
    table[["x", "y"]] = adata.obsm["spatial"][:, :2]
    io.write_csv(table, out / OUTPUT_FILES["domains"], index_label="barcode")
    embedding = pd.DataFrame(adata.obsm["X_staig"], index=adata.obs_names,
                             columns=[f"STAIG_{i + 1}" for i in range(adata.obsm["X_staig"].shape[1])])
    io.write_csv(embedding, out / OUTPUT_FILES["embedding"], index_label="barcode")
    figure = pl.domains(adata, "domain", save=out / OUTPUT_FILES["plot"],
                        title=f"{adata.uns['spatialdomains']['cluster']['n_domains']} domains (STAIG)")
    import matplotlib.pyplot as plt

    plt.close(figure)
    io.write_json(record, out / OUTPUT_FILES["provenance"])
    io.write_h5ad(adata, out / OUTPUT_FILES["result"])
    written = list(OUTPUT_FILES.values())
    if "rds" in adata.uns:  # an .rds input gets its results back as the same R class too
        io.write_rds(adata, out / RDS_RESULT)
        written.append(RDS_RESULT)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
