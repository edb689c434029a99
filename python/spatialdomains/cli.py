"""Command line: ``run`` (samples to domains), ``report`` (one sample to an HTML report), ``batch`` (a samplesheet
to one report per sample and an index), ``workflow`` (where the Snakemake workflow is) and ``demo``.

``run`` takes one sample, or several slices to integrate (several inputs, or one input with ``--batch-key``):
then each slice gets its own output folder and ``joint/`` holds the combined result and a UMAP. Paired omics
(``--method spami`` or ``baseline``) come as ``--modality rna=RNA.h5ad --modality adt=ADT.h5ad`` or one ``.h5mu``.
Exit codes: 0 success, 2 bad input or arguments, 1 any other failure.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

logger = logging.getLogger("spatialdomains")

#: With several slices: the folder of the combined result.
JOINT_FOLDER = "joint"
#: Flags that set a method's setting: flag attribute → setting name (checked against the method's config).
MODEL_FLAGS = {"layer": "layer", "library_size_key": "library_size_key", "graph": "graph", "tau": "tau",
               "epochs": "n_epochs", "preset": "preset", "n_top_genes": "n_top_genes",
               "gene_selection": "gene_selection", "n_resamples": "n_resamples", "training": "training",
               "batch_size": "batch_size"}
#: The image flags, which become STAIG's use_image and image_options.
IMAGE_FLAGS = ("image", "image_scale", "backbone", "backbone_weights")


def main(argv: list[str] | None = None, *, program: bool = False) -> int:
    """Run the command line; returns the exit code. ``program``: this is the ``spatialdomains`` process itself,
    which ends directly after a failed HDF5 write (h5py may crash when such a process shuts down normally)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    import matplotlib

    matplotlib.use("Agg")  # a command-line run only writes image files
    from .errors import BackendUnavailable, InputError, OutputFailed, ReportFailed, interface

    try:
        with interface("cli"), _signals_stop_the_run():
            return args.handler(args)
    except (InputError, FileNotFoundError) as error:
        print(f"spatialdomains: error: {error}", file=sys.stderr)
        return 2
    except (BackendUnavailable, ReportFailed) as error:
        print(f"spatialdomains: error: {error}", file=sys.stderr)
        return 1
    except OutputFailed as error:
        print(f"spatialdomains: error: {error}", file=sys.stderr)
        if program:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    except KeyboardInterrupt as error:
        number = getattr(error, "signal_number", signal.SIGINT)
        print(f"spatialdomains: stopped by {signal.Signals(number).name}; results that were not complete were not "
              "written", file=sys.stderr)
        return 128 + number


def program() -> None:
    """The ``spatialdomains`` command."""
    try:
        code = main(program=True)
    except KeyboardInterrupt:  # while the command starts, before the run's own handler is in place
        print("spatialdomains: stopped by SIGINT before any work; nothing was written", file=sys.stderr)
        code = 128 + signal.SIGINT
    sys.exit(code)


@contextlib.contextmanager
def _signals_stop_the_run():
    """Ctrl-C and SIGTERM raise :class:`~spatialdomains.errors.Interrupted` in the main thread, so partial results
    are removed on the way out and the exit code says which signal stopped the run (130 or 143)."""
    from .errors import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number, _frame):
        raise Interrupted(number)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="spatialdomains",
                                     description="Spatial domains from spatial transcriptomics.")
    parser.add_argument("--version", action="version", version=f"spatialdomains {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_run, _add_report, _add_batch, _add_workflow, _add_demo):
        add_command(commands)
    return parser


def _add_run(commands) -> None:
    from . import methods

    run = commands.add_parser("run", help="find the spatial domains of a sample, or of several slices together",
                              description="Find the spatial domains of one sample and write the result .h5ad, a "
                                          "domains CSV, the embedding, a domain plot and a provenance JSON. Several "
                                          "inputs (or one with --batch-key) are integrated: one folder per slice, "
                                          "plus joint/ with the combined result and a UMAP by slice and domain.")
    run.add_argument("inputs", nargs="*", metavar="INPUT",
                     help=".h5ad file, .rds file (SingleCellExperiment, SpatialExperiment or Seurat), SpatialData "
                          ".zarr, or the output folder of Space Ranger (Visium, Visium HD) or Xenium (raw counts); "
                          "several inputs are slices to integrate; for --method spami or baseline an .h5mu file (or "
                          "use --modality)")
    run.add_argument("--out", "--output", dest="out", required=True,
                     help="output folder (created; must be new or empty, see --force)")
    _add_force(run)
    _add_bin_size(run)
    _add_store_options(run)
    run.add_argument("--method", default="staig", choices=methods.names(),
                     help="model (default: staig); spami and baseline take paired omics on one section")
    run.add_argument("--modality", action="append", default=[], metavar="NAME=PATH",
                     help="spami/baseline: one modality of the section (e.g. rna=RNA.h5ad, adt=ADT.h5ad, "
                          "atac=ATAC.h5ad); repeat for each")
    run.add_argument("--modality-kind", action="append", default=[], metavar="NAME=KIND",
                     help="spami/baseline: what modality NAME holds (rna, adt or atac) when its name does not say")
    run.add_argument("--batch-key", help="obs column naming each spot's slice, when one input holds several slices")
    run.add_argument("--layer", help="layer with raw counts, if not X")
    run.add_argument("--library-size-key", help="STAIG: obs column with true per-spot totals when X is a gene subset")
    run.add_argument("--graph", choices=["auto", "radius", "knn"],
                     help="Spotscape: spatial graph (default auto: radius on spot and bin lattices, knn on cells)")
    run.add_argument("--label-key", help="obs column with reference labels: scores (ARI, NMI, ...) are reported")
    run.add_argument("--image", nargs="?", const=True, metavar="FILE",
                     help="STAIG: let the H&E image guide edge dropping and negatives: the input's own image "
                          "(full-res, hires or lowres), or FILE (then give --image-scale)")
    run.add_argument("--image-scale", type=float,
                     help="STAIG: pixels of --image FILE per coordinate unit of the input (default: 1, full resolution)")
    run.add_argument("--backbone", choices=["auto", "resnet18", "resnet34", "resnet50"],
                     help="STAIG image features: ResNet (default auto: resnet50 on a GPU, resnet18 on CPU)")
    run.add_argument("--backbone-weights", metavar="FILE",
                     help="STAIG image features: torchvision-layout ImageNet weights of --backbone (without: random "
                          "initialisation, with a warning)")
    _add_model_options(run)
    run.add_argument("--choose-by", default="silhouette", choices=["silhouette", "stability"],
                     help="without --n-domains: choose the number by silhouette (default) or by stability over "
                          "subsamples (the most detailed partition k-means reproduces)")
    run.set_defaults(handler=_run)


def _add_report(commands) -> None:
    from .report.request import report_methods

    report = commands.add_parser(
        "report", help="analyse one sample and write its HTML report",
        description="Find the domains of one sample, rank marker genes, run GO enrichment and write one "
                    "self-contained HTML report (QC, domains, UMAP, markers, DEG tables, volcanoes, GO, provenance).")
    report.add_argument("inputs", nargs="+", metavar="INPUT",
                        help=".h5ad, .rds, .h5mu, SpatialData .zarr, or the output folder of Space Ranger (Visium, "
                             "Visium HD) or Xenium; several inputs are slices to integrate")
    report.add_argument("--out", "--output", dest="out", required=True,
                        help="the HTML file to write (e.g. report.html)")
    _add_force(report, "an earlier report at --out and earlier results in --outputs-dir")
    _add_bin_size(report)
    _add_store_options(report)
    report.add_argument("--method", default="staig", choices=report_methods(),
                        help="model (default: staig); precomputed reports the domains already in obs['domain']")
    report.add_argument("--sample", help="sample name shown in the report (default: the input's file name)")
    report.add_argument("--modality", action="append", default=[], metavar="NAME=PATH",
                        help="spami/baseline: further omics of the section (e.g. adt=ADT.h5ad); the INPUT is RNA")
    _add_enrichment_options(report)
    report.add_argument("--image", help="tissue image to draw the domains on")
    report.add_argument("--image-scale", type=float, default=1.0,
                        help="pixels of --image per coordinate unit (default: 1)")
    report.add_argument("--outputs-dir", help="also write the sample's files here, as run writes them (domains.csv, "
                                              "embedding.csv, result.h5ad, provenance.json, ...), and markers.csv "
                                              "and go_enrichment.csv")
    report.add_argument("--library-size-key",
                        help="STAIG: obs column with true per-spot totals when the input holds a subset of the genes")
    report.add_argument("--label-key", help="obs column annotating the spots (e.g. a pathologist's layers): the "
                                            "report compares the domains with it (table, ARI/NMI, map)")
    report.add_argument("--condition-key", help="several slices: obs column giving each slice's condition (e.g. "
                                                "control, disease); the report compares them within each domain")
    report.add_argument("--notebook", help="also keep the executed notebook here")
    report.add_argument("--show-code", action="store_true", help="show the code in the page (hidden by default)")
    _add_model_options(report)
    report.set_defaults(handler=_report)


def _add_batch(commands) -> None:
    batch = commands.add_parser(
        "batch", help="one report per samplesheet row, with an index page",
        description="Validate the samplesheet (all problems listed at once), then write OUT/<sample>/report.html "
                    "(and its tables) for every sample and OUT/index.html. A failed sample does not stop the others; "
                    "the exit code is 1 when any failed. Complete samples are skipped unless --force. Columns: "
                    "sample, input (';' between slices), method, n_domains, species, gene_sets, image, image_scale, "
                    "bin_size, label_key, condition_key, modality_NAME, seed, epochs, preset, refine.")
    batch.add_argument("samplesheet", help="CSV (or .tsv) samplesheet")
    batch.add_argument("--out", "--output", dest="out", required=True, help="output folder")
    batch.add_argument("--jobs", type=int, default=1, help="samples processed at once (default: 1)")
    batch.add_argument("--force", action="store_true", help="redo samples that are already complete")
    batch.add_argument("--sample", help="process only this sample (no index; used by the Snakemake workflow)")
    batch.add_argument("--index-only", action="store_true",
                       help="only (re)write index.html from the sample folders; exit 1 if any sample is not ok")
    batch.add_argument("--engine", default="auto", choices=["auto", "clusterProfiler", "fallback"],
                       help="GO enrichment engine (default: clusterProfiler when installed)")
    batch.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    batch.add_argument("--threads", type=int, help="CPU threads per sample (default: the free cores, shared "
                                                   "between --jobs)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar or information messages")
    batch.set_defaults(handler=_batch)


def _add_workflow(commands) -> None:
    workflow = commands.add_parser("workflow", help="print the path of the Snakemake workflow (cluster runs)",
                                   description="Print the Snakefile's path; run it with snakemake -s PATH --cores N "
                                               "--config samplesheet=SHEET out=DIR (see its profiles/ for SLURM).")
    workflow.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    workflow.set_defaults(handler=_workflow)


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="run the whole pipeline on simulated data and score it",
                               description="Simulate a Visium-like sample with planted domains, find its domains "
                                           "and report the ARI against the planted truth.")
    demo.add_argument("--out", "--output", dest="out", default="demo-output",
                      help="output folder (default: demo-output)")
    _add_force(demo)
    demo.add_argument("--n-spots", type=int, default=3000, help="number of simulated spots (default: 3000)")
    _add_model_options(demo, default_domains=5)
    demo.set_defaults(handler=_demo)


def _add_bin_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bin-size", metavar="SIZE",
                        help="Visium HD input: bin size in µm, 2, 8 or 16 (default 8) or the run's custom size "
                             "(Space Ranger 3.1+), or 'cells' for Space Ranger 4's segmented cells")


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", metavar="NAME",
                        help="SpatialData .zarr input: the table to read (default: the only one, or a Visium HD "
                             "store's square_008um)")
    parser.add_argument("--coordinate-system", metavar="NAME",
                        help="SpatialData .zarr input: the coordinate system of the positions (default: the only "
                             "one of the table's element, else 'global', else the one it is untransformed in)")


def _resolved_inputs(args: argparse.Namespace) -> None:
    """With --bin-size, each Visium HD input becomes the folder of that bin size (checked before any work)."""
    from . import io

    if getattr(args, "bin_size", None) is not None:
        args.inputs = [str(io.input_path(path, args.bin_size)) for path in args.inputs]


def _add_force(parser: argparse.ArgumentParser, what: str = "the results of an earlier run in --out") -> None:
    parser.add_argument("--force", action="store_true",
                        help=f"replace {what} as a whole (never a folder or file spatialdomains did not write)")


def _add_model_options(parser: argparse.ArgumentParser, default_domains: int | None = None) -> None:
    """Options shared by the commands that find domains."""
    from . import methods

    parser.add_argument("--n-domains", type=int, default=default_domains,
                        help="number of domains (default: %s)" % (default_domains or "chosen by silhouette"))
    parser.add_argument("--epochs", type=int, help="training epochs (default: the model's or the preset's)")
    parser.add_argument("--n-top-genes", type=int,
                        help="STAIG, Spotscape: highly variable genes used (default: the model's, 3000 or 5000)")
    parser.add_argument("--gene-selection", choices=["seurat_v3", "mvp", "spatial"],
                        help="STAIG, Spotscape: how genes are chosen: seurat_v3 (default, as published), mvp "
                             "(mean-variance plot) or spatial (spatially variable, Moran's I)")
    parser.add_argument("--n-resamples", type=int,
                        help="STAIG: average the embedding over this many sampled edge sets (default: 0, as "
                             "published)")
    parser.add_argument("--cluster-method", default="auto", choices=["auto", "mclust", "gmm", "kmeans", "leiden"],
                        help="clustering backend (default: the method's own: "
                             + "".join(f"{m['cluster_auto']} for {m['title']}, " for m in methods.capabilities().values()
                                       if m["cluster_auto"])
                             + "otherwise mclust when R has it, else gmm)")
    parser.add_argument("--preset", choices=methods.all_presets(),
                        help="the method's settings preset: "
                             + "; ".join(f"{m['title']}: " + ", ".join(p + " (default)" * (p == m["default_preset"])
                                                                       for p in m["presets"])
                                         for m in methods.capabilities().values() if len(m["presets"]) > 1)
                             + " (docs/methods.md says what each sets)")
    parser.add_argument("--tau", type=float,
                        help="STAIG: temperature of the contrastive loss (default: the preset's)")
    parser.add_argument("--refine", default="auto", choices=["auto", "yes", "no"],
                        help="majority-vote refinement over 15 nearest spots (default: auto, for lattices)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads (default: one per core that other work leaves free, fewer for small "
                             "samples)")
    parser.add_argument("--training", choices=["auto", "full", "minibatch"],
                        help="STAIG: full batch, or mini-batches whose cost grows linearly with the spots "
                             "(default: auto, mini-batches above 10,000 spots)")
    parser.add_argument("--batch-size", type=int,
                        help="spots per mini-batch step of the large-data mode (default: 2048)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or information messages")


def _add_enrichment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--species", default="auto", help="human, mouse, ... (default: read from the gene IDs)")
    parser.add_argument("--key-type", default="auto", choices=["auto", "SYMBOL", "ENSEMBL", "ENTREZID"],
                        help="gene-ID type (default: detected)")
    parser.add_argument("--ontology", default="BP", choices=["BP", "MF", "CC"], help="GO ontology (default: BP)")
    parser.add_argument("--gene-sets", help="GMT file to use instead of GO (any species)")
    parser.add_argument("--engine", default="auto", choices=["auto", "clusterProfiler", "fallback"],
                        help="GO enrichment engine (default: clusterProfiler when installed, else the exact fallback)")
    parser.add_argument("--min-log2fc", type=float, default=0.25, help="marker |log2FC| threshold (default: 0.25)")
    parser.add_argument("--max-pvalue", type=float, default=0.05,
                        help="marker p threshold, on the p chosen by --pvalue (default: 0.05)")
    parser.add_argument("--n-markers", type=int, default=5,
                        help="top marker genes of each domain shown in the summary, dot plot and heatmap (default: 5)")
    parser.add_argument("--pvalue", default="adjusted", choices=["adjusted", "raw"],
                        help="p the marker threshold applies to: adjusted, the Benjamini-Hochberg adjusted p "
                             "(default); raw, the Wilcoxon p as it is (the STAIG paper's filter)")


def _run_options(args: argparse.Namespace) -> dict:
    """The run options (:class:`~spatialdomains.methods.base.RunConfig`) the model flags set."""
    return {"random_state": args.seed, "device": args.device, "n_threads": args.threads, "progress": not args.quiet}


def _report(args: argparse.Namespace) -> int:
    """One sample's report: the flags become one report request (checked before any work)."""
    from .report import render_report
    from .report.request import request_fields

    _resolved_inputs(args)
    fields = {field.name for field in request_fields()}
    options = {name: value for name, value in vars(args).items() if name in fields and value is not None}
    options.update({MODEL_FLAGS[flag]: getattr(args, flag) for flag in MODEL_FLAGS if getattr(args, flag, None)
                    is not None})
    options.update(refine=_refine(args), modalities=_pairs(args.modality, "--modality"), progress=not args.quiet)
    path = render_report(args.inputs, args.out, outputs_dir=args.outputs_dir, notebook=args.notebook,
                         show_code=args.show_code, force=args.force, **options)
    print(f"wrote {path}")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .report import batch

    if args.index_only:
        specs = batch.read_samplesheet(args.samplesheet, engine=args.engine)
        index = batch.write_index(Path(args.out), [s.sample for s in specs])
        not_ok = [s.sample for s in specs if batch.read_status(Path(args.out) / s.sample).get("status") != "ok"]
        print(f"wrote {index}" + (f"; not ok: {', '.join(not_ok)}" if not_ok else ""))
        return 1 if not_ok else 0
    statuses = batch.run_batch(args.samplesheet, args.out, jobs=args.jobs, force=args.force, only=args.sample,
                               engine=args.engine, device=args.device, threads=args.threads,
                               progress=not args.quiet)
    for name, status in statuses.items():
        state = "skipped (complete, inputs and parameters unchanged)" if status.get("skipped") else status["status"]
        print(f"{name}: {state}" + (f" - {status['error']}" if status["status"] != "ok" else ""))
    failed = sum(status["status"] != "ok" for status in statuses.values())
    where = f"; index: {Path(args.out) / batch.INDEX_FILE}" if args.sample is None else ""
    print(f"{len(statuses) - failed} of {len(statuses)} samples ok{where}")
    return 1 if failed else 0


def _workflow(args: argparse.Namespace) -> int:
    from .report.render import workflow_path

    print(workflow_path())
    return 0


def _run(args: argparse.Namespace) -> int:
    from . import io, methods
    from .errors import InputError

    method = methods.get(args.method)
    if method.kind == "omics":
        return _run_multiomics(args)
    if args.modality or args.modality_kind:
        raise InputError(f"--modality and --modality-kind apply to --method spami or baseline, not {args.method}")
    if not args.inputs:
        raise InputError("give at least one INPUT (an .h5ad file, an .rds file or a Space Ranger folder)")
    params = {**_model_options(args, method), **_image_params(args, method)}
    _resolved_inputs(args)
    if len(args.inputs) > 1 and args.batch_key is not None:
        raise InputError("--batch-key names the slice column of a single input; with several inputs each "
                         "input is one slice")
    output = _checked_output(args)
    samples = io.read_each(args.inputs, table=args.table, coordinate_system=args.coordinate_system)
    if len(samples) == 1 and args.batch_key is None:
        return _find_and_write(samples[0], args, output, label_key=args.label_key, **params)
    return _integrate_and_write(samples, args, output, **params)


def _checked_output(args: argparse.Namespace):
    """The output folder of a ``run`` or ``demo``, checked against every file the command reads, before any work."""
    from . import outputs

    inputs = [*getattr(args, "inputs", []), *(_pairs(getattr(args, "modality", []), "--modality").values()),
              getattr(args, "image", None) if isinstance(getattr(args, "image", None), str) else None,
              getattr(args, "backbone_weights", None)]
    inputs = [path for path in inputs if path]
    output = outputs.Output(args.out, inputs=inputs, force=args.force)
    output.check()
    outputs.free_space_warning(args.out, inputs)
    return output


def _marker(args: argparse.Namespace, method: str) -> dict:
    """What the output folder's marker says made it."""
    inputs = [str(Path(p).resolve()) for p in getattr(args, "inputs", [])]
    inputs += [str(Path(p).resolve()) for p in _pairs(getattr(args, "modality", []), "--modality").values()]
    return {"command": args.command, "method": method, "inputs": inputs}


def _model_options(args: argparse.Namespace, method) -> dict:
    """The method's settings from the flags given; a flag the method does not read is an error naming it."""
    from . import methods
    from .errors import InputError
    from .report.request import RUN_SETTINGS

    given = {MODEL_FLAGS[flag]: getattr(args, flag) for flag in MODEL_FLAGS if getattr(args, flag, None) is not None}
    problems = methods.setting_problems(method, given, extra=RUN_SETTINGS)
    if problems:
        raise InputError("; ".join(problems))
    return given


def _flag_list(flags: list[str]) -> str:
    """'--tau does not apply' or '--tau, --graph do not apply'."""
    named = ", ".join("--" + flag.replace("_", "-") for flag in flags)
    return f"{named} {'does' if len(flags) == 1 else 'do'} not apply"


def _image_params(args: argparse.Namespace, method) -> dict:
    """STAIG's image options from --image, --image-scale, --backbone and --backbone-weights."""
    from .errors import InputError

    given = [flag for flag in IMAGE_FLAGS if getattr(args, flag, None)]
    if given and "use_image" not in method.option_names():
        raise InputError(f"{_flag_list(given)} to --method {method.name}")
    if not args.image:
        extra = [f"--{flag.replace('_', '-')}" for flag in given]
        if extra:
            raise InputError(f"{', '.join(extra)} only apply together with --image")
        return {}
    options = {"backbone": args.backbone, "weights": args.backbone_weights}
    if isinstance(args.image, str):
        if len(args.inputs) > 1 or args.batch_key:
            raise InputError("--image FILE gives one image for one section; for several slices, keep each "
                             "slice's image in its input (uns['spatial'] or the Space Ranger folder) and pass --image")
        options.update(image=args.image, image_scale=args.image_scale)
    elif args.image_scale is not None:
        raise InputError("--image-scale applies to an image file: use --image FILE --image-scale S")
    return {"use_image": True, "image_options": {k: v for k, v in options.items() if v is not None}}


def _run_multiomics(args: argparse.Namespace) -> int:
    """Paired omics on one section: read the modalities, find the domains, write the outputs."""
    from . import io, methods
    from .errors import InputError
    from .results import write_sample
    from .tl import find_domains

    method = args.method
    params = {**_model_options(args, methods.get(method)), **_image_params(args, methods.get(method))}
    if args.batch_key:
        raise InputError(f"--batch-key does not apply to --method {method}: it takes one section")
    if args.modality and args.inputs:
        raise InputError("give the modalities either as --modality NAME=PATH or as one .h5mu INPUT, not both")
    if not args.modality and len(args.inputs) != 1:
        raise InputError(f"--method {method} takes one section: its modalities as --modality rna=RNA.h5ad "
                         "--modality adt=ADT.h5ad, or one .h5mu file (or one .h5ad for a single modality)")
    params["modality_kinds"] = _pairs(args.modality_kind, "--modality-kind") or None
    output = _checked_output(args)
    if args.modality:
        data = {name: io.read(path) for name, path in _pairs(args.modality, "--modality").items()}
    else:
        path = args.inputs[0]
        data = io.read_h5mu(path) if str(path).lower().endswith(".h5mu") else io.read(path)
    parts = list(data.values()) if isinstance(data, dict) else [data, *getattr(data, "mod", {}).values()]
    if args.label_key is not None and not any(args.label_key in part.obs for part in parts):
        raise InputError(f"--label-key: no obs['{args.label_key}'] in the input or any of its modalities")
    result = find_domains(data, method, args.n_domains, cluster_method=args.cluster_method, refine=_refine(args),
                          choose_by=_choose_by(args),
                          **_run_options(args), **{k: v for k, v in params.items() if v is not None})
    record = dict(result.uns["spatialdomains"])
    if args.label_key is not None:
        result.obs[args.label_key] = _label_column(result, args.label_key)
        record["scores"] = _scores(result, args.label_key, "")
    with output.writing(_marker(args, method)) as folder:
        written = write_sample(folder, result, record, method=method)
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    """NAME=VALUE arguments as a dict; an error naming the flag for malformed or repeated names."""
    from .errors import InputError

    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise InputError(f"{flag} expects NAME=VALUE (e.g. rna=RNA.h5ad), got '{value}'")
        if name in pairs:
            raise InputError(f"{flag} names '{name}' twice")
        pairs[name] = rest
    return pairs


def _label_column(result, label_key: str):
    """Reference labels for the result's spots: its own obs column, else the first modality that has it."""
    from .errors import InputError
    from .modalities import obs_column

    labels = obs_column(result, label_key, result.obs_names)
    if labels is None:
        raise InputError(f"--label-key: no obs['{label_key}'] in the input or any of its modalities")
    return labels


def _demo(args: argparse.Namespace) -> int:
    from . import methods
    from .datasets import simulate_visium

    options = _model_options(args, methods.get("staig"))
    output = _checked_output(args)
    adata = simulate_visium(args.n_spots, args.n_domains or 5, seed=args.seed)
    logger.info("simulated %d spots × %d genes with %d planted domains", adata.n_obs, adata.n_vars,
                args.n_domains or 5)
    return _find_and_write(adata, args, output, label_key="ground_truth", library_size_key="total_counts",
                           **options)


def _find_and_write(adata, args: argparse.Namespace, output, *, label_key: str | None, **method_params) -> int:
    from .results import write_sample
    from .tl import find_domains

    _check_label_key(adata, label_key)
    method = getattr(args, "method", "staig")
    find_domains(adata, method, args.n_domains, cluster_method=args.cluster_method, refine=_refine(args),
                 choose_by=_choose_by(args),
                 **_run_options(args), **{k: v for k, v in method_params.items() if v is not None})
    record = dict(adata.uns["spatialdomains"])
    if label_key is not None:
        record["scores"] = _scores(adata, label_key, "")
    with output.writing(_marker(args, method)) as folder:
        written = write_sample(folder, adata, record, method=method)
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _integrate_and_write(samples: list, args: argparse.Namespace, output, **method_params) -> int:
    """Several slices: integrate, then one folder per slice and ``joint/`` for the combined result."""
    from . import metrics
    from . import tl as tools
    from .results import write_joint, write_sample
    from .slices import DEFAULT_BATCH_KEY, slice_names, split

    method, label_key = args.method, args.label_key
    for sample in samples:
        _check_label_key(sample, label_key)
    if len(samples) > 1:
        data, batch_key = dict(zip(slice_names(args.inputs), samples)), DEFAULT_BATCH_KEY
    else:
        data, batch_key = samples[0], args.batch_key
    combined = tools.find_domains(data, method, args.n_domains, batch_key=batch_key,
                                  cluster_method=args.cluster_method, refine=_refine(args),
                                  choose_by=_choose_by(args), **_run_options(args),
                                  **{k: v for k, v in method_params.items() if v is not None})
    per_slice = data if isinstance(data, dict) else {name: part.copy() for name, part in split(combined, batch_key)}
    record = dict(combined.uns["spatialdomains"])
    embedding = combined.obsm[f"X_{method}"]
    labels = combined.obs[label_key] if label_key else combined.obs["domain"]
    record["integration"] = {"labels": label_key or "domain", **metrics.integration(
        embedding, combined.obs[batch_key].astype(str), labels)}
    slice_records = {}
    for name, sample in per_slice.items():
        slice_records[name] = dict(sample.uns.get("spatialdomains", record))
        if label_key is not None:
            slice_records[name]["scores"] = _scores(sample, label_key, f"{name} ")
    if label_key is not None:
        record["scores"] = _scores(combined, label_key, "all slices ")
    tools.umap(combined, use_rep=f"X_{method}", random_state=args.seed)
    with output.writing(_marker(args, method)) as out:
        for name, sample in per_slice.items():
            write_sample(out / _folder_name(name), sample, slice_records[name], method=method)
        write_joint(out / JOINT_FOLDER, combined, record, method=method, slice_key=batch_key)
    scores = record["integration"]
    print(f"integration: iLISI {scores['ilisi']:.2f}  BatchKL {scores['batch_kl']:.3f}  graph connectivity "
          f"{scores['graph_connectivity']:.3f}  batch silhouette {scores['batch_silhouette']:.3f}")
    print(f"wrote {len(per_slice)} slice folders ({', '.join(_folder_name(n) for n in per_slice)}) and "
          f"{JOINT_FOLDER}/ to {args.out}")
    return 0


def _scores(adata, label_key: str, what: str) -> dict:
    from . import metrics

    scores = {"refined" if "domain_unrefined" in adata.obs else "domain":
              metrics.evaluate(adata.obs[label_key], adata.obs["domain"])}
    if "domain_unrefined" in adata.obs:
        scores["unrefined"] = metrics.evaluate(adata.obs[label_key], adata.obs["domain_unrefined"])
    for name, values in scores.items():
        print(f"{what}{name}: ARI {values['ari']:.3f}  NMI {values['nmi']:.3f}  ({values['n_scored']} spots scored)")
    return {"label_key": label_key, **scores}


def _check_label_key(adata, label_key: str | None) -> None:
    from .errors import InputError

    if label_key is not None and label_key not in adata.obs:
        raise InputError(f"--label-key: obs['{label_key}'] does not exist (obs columns: {', '.join(adata.obs)})")


def _choose_by(args) -> str:
    """How the number of domains is chosen when --n-domains is not given (``run`` has --choose-by)."""
    return getattr(args, "choose_by", "silhouette")


def _refine(args: argparse.Namespace):
    from .report.batch import REFINE_VALUES

    return REFINE_VALUES[args.refine]


def _folder_name(name: str) -> str:
    """A slice name made safe as a folder name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).strip(".") or "slice"
    return f"slice_{safe}" if safe == JOINT_FOLDER else safe


if __name__ == "__main__":
    program()
