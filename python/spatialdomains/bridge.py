"""Entry points for the R package, which calls them through reticulate.

R converts its objects itself and passes plain pieces (a sparse count matrix, coordinates, names, vectors);
results come back as arrays and plain lists. No R object crosses into Python and rpy2 is never started here:
starting R through rpy2 from Python that already runs inside R aborts the R session.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import json_safe, step_messages
from .errors import InputError, interface
from ._tissue_image import attach_image

SLICE_COLUMN = "slice"


def _r_entry(function):
    """An entry point R calls: errors name options as R arguments (``n_domains = 3``, ``force = TRUE``), torch
    is loaded with its own maths libraries (see :func:`_load_torch`), and what Python would print on stderr
    (progress, step messages with ``progress=True``, warnings) goes to R's ``console`` function when R gives one."""
    import functools

    @functools.wraps(function)
    def wrapped(*args, console=None, **kwargs):
        _load_torch()
        with interface("r"), _stderr_to(console), step_messages(bool(kwargs.get("progress"))):
            return function(*args, **kwargs)

    return wrapped


class _RConsole(io.TextIOBase):
    """Python's stderr during an R call: each piece of text goes to an R function (``message()``), so that it
    appears where R's messages do (the console, RStudio, knitr output, ``sink()``)."""

    def __init__(self, send) -> None:
        self.send = send

    def write(self, text: str) -> int:
        if text:
            self.send(text)
        return len(text)

    def isatty(self) -> bool:
        return False  # progress as lines, never a bar that redraws itself


@contextlib.contextmanager
def _stderr_to(console):
    """``sys.stderr`` is ``console`` (an R function taking text) within the block, when one is given."""
    if console is None:
        yield
        return
    previous, sys.stderr = sys.stderr, _RConsole(console)
    try:
        yield
    finally:
        sys.stderr = previous


def _load_torch() -> None:
    """Import torch so that its libraries use their own symbols (its MKL, not R's BLAS), and keep numba off the
    OpenMP pool torch uses inside R.

    R loads its BLAS into the process first, so torch's matrix products would otherwise run on R's reference
    or OpenBLAS build: measured on DLPFC 151673, 0.31 s per STAIG epoch from R against 0.16 s from Python, and
    0.22 s once torch binds to its own libraries. Done once, before anything else imports torch.

    R also loads the system's OpenMP runtime, and torch's own copy has the same name, so inside R torch's
    threads are that runtime's. numba's default threading layer uses it too, and once scanpy's gene selection
    had run numba there, every torch operation was slower (STAIG's loss: 0.21 s a step against 0.155 s).
    numba's own work-queue threads avoid the shared pool; a user's ``NUMBA_THREADING_LAYER`` is kept.
    """
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    if "numba" in sys.modules:
        sys.modules["numba"].config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
    if "torch" in sys.modules or not hasattr(os, "RTLD_DEEPBIND"):
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        import torch  # noqa: F401
    finally:
        sys.setdlopenflags(flags)


@_r_entry
def embed(
    method: str,
    counts,
    coordinates,
    spot_names,
    gene_names,
    *,
    library_size=None,
    slices=None,
    images: dict | None = None,
    params: dict | None = None,
    random_state: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Train ``method`` on one sample, or on several slices together, and return the embedding and record.

    ``counts`` is genes × spots (the R orientation, e.g. a dgCMatrix converted by reticulate), ``coordinates``
    spots × 2 (x, y), each slice in its own frame. ``slices`` (one label per spot) names the slice of each spot
    for integration. ``images`` (STAIG with ``params['use_image']``) maps each slice's name (any name for one
    sample) to ``{"array": H × W × 3 in [0, 1], "scale": image pixels per coordinate unit, "fiducial":
    fiducial diameter in coordinate units or None}``; the pipeline makes the image features per slice.
    ``params['learning_rate']`` with several values trains once per value and keeps the run of best silhouette
    (:func:`spatialdomains.tl.select_learning_rate`; ``params['n_domains']`` is then its number of domains).
    Returns ``embedding`` (spots × dims, float64, NaN rows for spots left out), ``encoder_embedding`` (STAIG's
    encoder output, or None), ``record`` (parameters, seed, versions, timings) and ``image_record`` (or None) as
    plain lists.
    """
    from . import methods
    from .pipeline import run_method

    if method not in methods.names("expression"):
        raise InputError(f"method must be one of {', '.join(methods.names('expression'))}, got '{method}'")
    adata = _anndata(counts, coordinates, spot_names, gene_names, library_size)
    options = dict(params or {})
    if slices is not None:
        labels = [str(label) for label in np.atleast_1d(slices)]
        if len(labels) != adata.n_obs:
            raise InputError(f"slices has {len(labels)} labels for {adata.n_obs} spots")
        adata.obs[SLICE_COLUMN] = labels
        options["batch_key"] = SLICE_COLUMN
    if library_size is not None:
        if "library_size_key" not in methods.get(method).option_names():
            taking = [name for name in methods.names() if "library_size_key" in methods.get(name).option_names()]
            raise InputError(f"library_size does not apply to {method}, which normalises over its own genes (it "
                             f"applies to {', '.join(taking)})")
        options["library_size_key"] = "total_counts"
    if images and options.get("use_image"):
        _attach_slice_images(adata, images, slices is not None)
    rates = options.pop("learning_rate", None)
    if rates is not None and np.ndim(rates) > 0:  # several candidates: chosen by silhouette
        from .tl import select_learning_rate

        select_learning_rate(adata, method, learning_rates=list(np.atleast_1d(rates)),
                             n_domains=options.pop("n_domains", None), random_state=int(random_state), device=device,
                             progress=progress, **options)
    else:
        options.update({} if rates is None else {"learning_rate": rates})
        run_method(method, adata, random_state=int(random_state), device=device, progress=progress, **options)
    records = adata.uns["spatialdomains"]
    image_record = records.get("image_features")
    encoder = adata.obsm.get(f"X_{method}_encoder")
    selection = {"learning_rate_selection": records["learning_rate_selection"]} if (
        "learning_rate_selection" in records) else {}
    return {
        "embedding": np.asarray(adata.obsm[f"X_{method}"], dtype=np.float64),
        "encoder_embedding": None if encoder is None else np.asarray(encoder, dtype=np.float64),
        "record": json_safe({**records[method], **selection}),
        "image_record": None if image_record is None else json_safe(image_record),
    }


@_r_entry
def pseudotime(embedding, spot_names, *, domains=None, root_domain=None, root_spot=None, n_neighbors: int = 20,
               n_dcs: int = 10, random_state: int = 0) -> dict:
    """:func:`spatialdomains.tl.pseudotime` on an embedding (spots × dims, NaN rows for spots without one);
    ``domains`` (one label per spot) when the root is a domain. Returns ``pseudotime`` and ``record``."""
    from .tl import pseudotime as compute

    adata = _embedded(embedding, spot_names)
    if domains is not None:
        adata.obs["domain"] = _labels(domains, adata.n_obs, "domains")
    compute(adata, use_rep="X", root_domain=root_domain, root_spot=root_spot, n_neighbors=int(n_neighbors),
            n_dcs=int(n_dcs), random_state=int(random_state))
    return {"pseudotime": adata.obs["pseudotime"].to_numpy(dtype=np.float64),
            "record": json_safe(adata.uns["spatialdomains"]["pseudotime"])}


@_r_entry
def transfer_labels(reference_embedding, reference_coordinates, reference_names, labels, query_embedding,
                    query_coordinates, query_names, *, truth=None, n_candidates: int = 20,
                    spatial_smoothing: bool = True, random_state: int = 0) -> dict:
    """:func:`spatialdomains.tl.transfer_labels` between two jointly embedded slices given as pieces (embedding
    and coordinates spots × columns, names, the reference ``labels``, optionally the query's own ``truth``).
    Returns ``label``, ``confidence``, ``reference_spot`` (per query spot) and ``record``."""
    from .tl import transfer_labels as transfer

    reference = _embedded(reference_embedding, reference_names, reference_coordinates)
    query = _embedded(query_embedding, query_names, query_coordinates)
    reference.obs["label"] = _labels(labels, reference.n_obs, "labels")
    if truth is not None:
        query.obs["truth"] = _labels(truth, query.n_obs, "truth")
    transfer(reference, query, label_key="label", use_rep="X", n_candidates=int(n_candidates),
             spatial_smoothing=bool(spatial_smoothing), truth_key=None if truth is None else "truth",
             random_state=int(random_state), key_added="transferred")
    return {"label": _strings(query.obs["transferred"]),
            "confidence": query.obs["transferred_confidence"].to_numpy(dtype=np.float64),
            "reference_spot": _strings(query.obs["transferred_reference_spot"]),
            "record": json_safe(query.uns["spatialdomains"]["transfer_labels"])}


@_r_entry
def stability(embedding, candidates, *, random_state: int = 0) -> dict:
    """The stability of each candidate number of domains (:func:`spatialdomains.cluster.stability`) and the number
    the rule keeps; R fits mclust itself at that number."""
    from .cluster import STABILITY_TOLERANCE, most_detailed_stable, stability as scores_of

    scores = scores_of(np.asarray(embedding, dtype=np.float64), [int(k) for k in np.atleast_1d(candidates)],
                       random_state=int(random_state))
    return {"scores": {str(k): v for k, v in scores.items()}, "best": most_detailed_stable(scores),
            "tolerance": STABILITY_TOLERANCE}


@_r_entry
def impute(counts, coordinates, spot_names, gene_names, *, slices=None, params: dict | None = None,
           random_state: int = 0, device: str = "auto", progress: bool = False, method: str = "spotscape") -> dict:
    """``method`` (a decoder of expression, Spotscape by default) trained on one sample (or slices) and its denoised
    expression (:func:`spatialdomains.tl.impute`): ``denoised`` genes × spots (log-normalised scale), ``genes``,
    ``embedding`` (spots × dims) and ``record``."""
    from .tl import impute as denoise

    adata = _anndata(counts, coordinates, spot_names, gene_names, None)
    options = dict(params or {})
    if slices is not None:
        adata.obs[SLICE_COLUMN] = _labels(slices, adata.n_obs, "slices").astype(str)
        options["batch_key"] = SLICE_COLUMN
    imputed = denoise(adata, method=method, random_state=int(random_state), device=device, progress=progress,
                      **options)
    return {"denoised": np.asarray(imputed.X, dtype=np.float64).T, "genes": [str(g) for g in imputed.var_names],
            "embedding": np.asarray(adata.obsm[f"X_{method}"], dtype=np.float64),
            "record": json_safe(adata.uns["spatialdomains"][method])}


@_r_entry
def compare_conditions(counts, spot_names, gene_names, conditions, domains, samples, *, reference=None,
                       min_spots: int = 10) -> dict:
    """:func:`spatialdomains.tl.compare_conditions` on pieces: counts genes × spots, one condition, domain and
    slice per spot. Returns ``genes``, ``composition`` and ``shares`` (data frames) and ``record``."""
    from .tl import compare_conditions as compare

    adata = _anndata(counts, np.zeros((len(np.atleast_1d(spot_names)), 2)), spot_names, gene_names, None)
    for column, values in (("condition", conditions), ("domain", domains), ("slice", samples)):
        adata.obs[column] = _labels(values, adata.n_obs, column)
    result = compare(adata, "condition", domain_key="domain", sample_key="slice",
                     reference=None if reference is None else str(reference), min_spots=int(min_spots))
    return {"genes": result.genes, "composition": result.composition, "shares": result.shares,
            "record": json_safe(adata.uns["spatialdomains"]["compare_conditions"])}


def _embedded(embedding, spot_names, coordinates=None) -> ad.AnnData:
    """An AnnData of spots only, holding an embedding in ``obsm['X']`` (and coordinates in ``obsm['spatial']``)."""
    names = [str(name) for name in np.atleast_1d(spot_names)]
    values = np.asarray(embedding, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != len(names):
        raise InputError(f"the embedding has shape {values.shape} for {len(names)} spots")
    adata = ad.AnnData(obs=pd.DataFrame(index=pd.Index(names)))
    adata.obsm["X"] = values
    if coordinates is not None:
        adata.obsm["spatial"] = np.asarray(coordinates, dtype=np.float64)
    return adata


def _strings(column: pd.Series) -> list[str]:
    """A column as strings for R, '' where it has no value (R turns those into NA)."""
    return ["" if pd.isna(value) else str(value) for value in column.astype(object)]


def _labels(values, n: int, what: str) -> pd.Categorical:
    labels = [None if value is None or (isinstance(value, float) and np.isnan(value)) or value == "" else str(value)
              for value in np.atleast_1d(np.asarray(values, dtype=object))]  # R sends missing values as ""
    if len(labels) != n:
        raise InputError(f"{what} has {len(labels)} values for {n} spots")
    return pd.Categorical(labels)


def _attach_slice_images(adata: ad.AnnData, images: dict, several: bool) -> None:
    """Each slice's image as the ``uns['spatial']`` library named after it (one sample: its only library)."""
    if not several:
        image = next(iter(images.values()))
        attach_image(adata, np.asarray(image["array"], dtype=np.float32), image["scale"],
                     fiducial_diameter=image.get("fiducial"))
        return
    names = list(pd.unique(adata.obs[SLICE_COLUMN]))
    if set(map(str, images)) != set(names):
        raise InputError(f"images are named {sorted(map(str, images))}, the slices {sorted(names)}: give one image "
                         "per slice, named by slice")
    libraries = {}
    for name, image in images.items():
        factors = {"tissue_hires_scalef": float(image["scale"])}
        if image.get("fiducial") is not None:
            factors["fiducial_diameter_fullres"] = float(image["fiducial"])
        libraries[str(name)] = {"images": {"hires": np.asarray(image["array"], dtype=np.float32)},
                                "scalefactors": factors}
    adata.uns["spatial"] = libraries


@_r_entry
def embed_multiomics(
    modalities: dict,
    coordinates,
    spot_names,
    *,
    kinds: dict | None = None,
    params: dict | None = None,
    random_state: int = 0,
    device: str = "auto",
    progress: bool = False,
    method: str = "spami",
) -> dict:
    """Train ``method`` (SpaMI, or another paired-omics method) on paired omics of one section and return its
    outputs as plain pieces.

    ``modalities`` maps each modality's name to ``{"counts": features × spots, "feature_names": [...]}`` (the R
    orientation), all on the same spots (``spot_names``) at ``coordinates``; ``kinds`` says what a modality
    holds when its name does not ('rna', 'adt' or 'atac'). Returns ``embedding`` (fused), ``modality_embeddings``
    and ``attention`` (spots × modalities, columns in ``modalities`` order, NaN rows for spots left out),
    ``modalities`` (their order) and ``record``.
    """
    from .pipeline import run_method

    from . import methods

    if method not in methods.names("omics"):
        raise InputError(f"method must be one of {', '.join(methods.names('omics'))}, got '{method}'")
    result = run_method(method, _modalities_data(modalities, coordinates, spot_names), modality_kinds=kinds,
                        random_state=int(random_state), device=device, progress=progress, **dict(params or {}))
    record = result.uns["spatialdomains"][method]
    names = [str(name) for name in record["modalities"]]
    rows = result.obs_names.get_indexer(pd.Index([str(s) for s in np.atleast_1d(spot_names)]))
    key = f"X_{method}"
    attention = result.obsm.get(f"{method}_attention")
    return {
        "embedding": np.asarray(result.obsm[key], dtype=np.float64)[rows],
        "modality_embeddings": {name: np.asarray(result.obsm[f"{key}_{name}"], dtype=np.float64)[rows]
                                for name in names if f"{key}_{name}" in result.obsm},
        "attention": None if attention is None else np.asarray(attention, dtype=np.float64)[rows],
        "modalities": names,
        "record": json_safe(record),
    }


def _modalities_data(modalities, coordinates, spot_names) -> dict:
    """Modality name → AnnData from R's pieces (each ``{"counts": features × spots, "feature_names": [...]}``)."""
    if not isinstance(modalities, dict) or not modalities:
        raise InputError("modalities must map each modality's name to its counts and feature names")
    data = {}
    for name, piece in modalities.items():
        if not isinstance(piece, dict) or "counts" not in piece or "feature_names" not in piece:
            raise InputError(f"modality '{name}' needs 'counts' and 'feature_names'")
        data[str(name)] = _anndata(piece["counts"], coordinates, spot_names, piece["feature_names"], None)
    return data


@_r_entry
def impute_multiomics(modalities: dict, coordinates, spot_names, *, kinds: dict | None = None,
                      modality: str | None = None, params: dict | None = None, random_state: int = 0,
                      device: str = "auto", progress: bool = False, method: str = "spami") -> dict:
    """SpaMI trained on paired omics (pieces as in :func:`embed_multiomics`) and one modality's denoised values
    (:func:`spatialdomains.tl.impute`): ``denoised`` features × spots (NaN for spots left out), ``features``,
    ``modality``, ``scale``, ``embedding`` and ``record``."""
    from .tl import impute as denoise

    imputed = denoise(_modalities_data(modalities, coordinates, spot_names), method=method, modality=modality,
                      modality_kinds=kinds, random_state=int(random_state), device=device, progress=progress,
                      **dict(params or {}))
    rows = imputed.obs_names.get_indexer(pd.Index([str(s) for s in np.atleast_1d(spot_names)]))
    records = imputed.uns["spatialdomains"]
    return {"denoised": np.asarray(imputed.X, dtype=np.float64)[rows].T, "features": list(map(str, imputed.var_names)),
            "modality": records["impute"]["modality"], "scale": records["impute"]["scale"],
            "embedding": np.asarray(imputed.obsm[f"X_{method}"], dtype=np.float64)[rows],
            "record": json_safe({**records[method], "impute": records["impute"]})}


def simulate_multiomics(n_spots: int = 1300, n_domains: int = 5, second: str = "adt", seed: int = 0) -> dict:
    """The built-in paired-omics example as plain pieces: each modality's counts (features × spots, dgCMatrix
    slots) and feature names, the shared coordinates, spot names and ground truth."""
    from .datasets import simulate_multiomics as simulate

    mdata = simulate(int(n_spots), int(n_domains), second=str(second), seed=int(seed))
    return {
        "modalities": {name: {"counts": _csc_pieces(part.X.T), "feature_names": part.var_names.to_list()}
                       for name, part in mdata.mod.items()},
        "coordinates": np.asarray(mdata.obsm["spatial"], dtype=np.float64),
        "spot_names": mdata.obs_names.to_list(),
        "ground_truth": mdata.obs["ground_truth"].astype(str).to_list(),
        "domains": list(mdata.obs["ground_truth"].cat.categories),
    }


def simulate(n_spots: int = 3000, n_domains: int = 5, seed: int = 0, image: bool = False) -> dict:
    """The built-in example sample as plain pieces: counts (genes × spots, dgCMatrix slots), coordinates, annotations,
    scale factors and, when asked, the synthetic tissue image (height × width × RGB in [0, 1])."""
    from .datasets import simulate_visium

    adata = simulate_visium(int(n_spots), int(n_domains), seed=int(seed), image=bool(image))
    library = adata.uns["spatial"]["simulated"]
    return {
        "counts": _csc_pieces(adata.X.T),
        "coordinates": np.asarray(adata.obsm["spatial"], dtype=np.float64),
        "spot_names": adata.obs_names.to_list(),
        "gene_names": adata.var_names.to_list(),
        "obs": {name: _plain_column(adata.obs[name]) for name in adata.obs.columns},
        "var": {name: _plain_column(adata.var[name]) for name in adata.var.columns},
        "simulation": json_safe(adata.uns["simulation"]),
        "scalefactors": json_safe(library["scalefactors"]),
        "image": library["images"].get("hires"),
    }


@_r_entry
def report(counts, coordinates, spot_names, gene_names, file: str, *, domains=None, embedding=None,
           embedding_name: str | None = None, symbols=None, slices=None, image=None, image_scale: float = 1.0,
           method: str = "precomputed", options: dict | None = None, annotation=None,
           label_key: str | None = None) -> str:
    """Render the HTML report of a sample that R holds, from plain pieces (see :func:`embed` for their shapes).

    ``domains`` (one label per spot, NA allowed) are reported as they are with ``method='precomputed'``;
    otherwise ``method`` finds them. ``embedding`` (spots × dims) is the representation behind the UMAP, stored
    as ``obsm['X_<embedding_name>']``; ``image`` an RGB array drawn under the spots at ``image_scale``;
    ``annotation`` (one label per spot) the column ``label_key`` that the domains are compared with.
    ``options``: the report's options and the method's settings by name, as :meth:`ReportRequest.build` takes
    them (checked before any work, in R's words), and ``outputs_dir``, ``show_code``, ``force``. The report's
    notebook runs in its own Python process, which may use clusterProfiler through rpy2 (unlike this one, inside
    R).
    """
    import tempfile
    from pathlib import Path

    from .io import write_h5ad
    from .report import ReportRequest, render_report

    adata = _anndata(counts, coordinates, spot_names, gene_names, None)
    if domains is not None:
        labels = pd.Series(np.atleast_1d(domains), dtype=object).where(lambda v: pd.notna(v) & (v != "NA"))
        adata.obs["domain"] = pd.Categorical(labels.to_numpy(), categories=pd.unique(labels.dropna().astype(str)))
    if embedding is not None:
        adata.obsm[f"X_{embedding_name or 'embedding'}"] = np.asarray(embedding, dtype=np.float64)
    if symbols is not None:
        adata.var["symbol"] = [str(s) for s in np.atleast_1d(symbols)]
    if slices is not None:
        adata.obs[SLICE_COLUMN] = [str(s) for s in np.atleast_1d(slices)]
    if annotation is not None:
        values = pd.Series(np.atleast_1d(annotation), dtype=object).where(lambda v: pd.notna(v) & (v != "NA"))
        adata.obs[label_key] = pd.Categorical(values.to_numpy())
    if image is not None:
        attach_image(adata, np.asarray(image, dtype=np.float32), image_scale)
    options = {k: v for k, v in dict(options or {}).items() if v is not None}
    if annotation is not None:
        options["label_key"] = label_key
    rendering = {name: options.pop(name) for name in ("outputs_dir", "notebook", "show_code", "force", "timeout")
                 if name in options}
    with tempfile.TemporaryDirectory(prefix="spatialdomains-r-report-") as work:
        source = Path(work) / f"{options.pop('sample', None) or 'sample'}.h5ad"
        source.touch()  # the request checks that its input exists, before the sample is written there
        request = ReportRequest.build([str(source)], method=method, sample=source.stem, **options)
        write_h5ad(adata, source)
        path = render_report(out=file, request=request, **rendering)
    return str(path)


@_r_entry
def method_info() -> dict:
    """Every registered method and what it can do (:func:`spatialdomains.methods.capabilities`), and the report's
    extra choice ('precomputed'): R offers its methods from this, so a method registered in Python needs no R
    edit."""
    from . import methods
    from .report.request import PRECOMPUTED

    return {"methods": json_safe(methods.capabilities()), "precomputed": PRECOMPUTED}


def seurat_spatial_code() -> str:
    """The file of R code that reads a Seurat object's positions and images, shared by R's Seurat door and the
    command line's .rds door (R sources it into an environment of its own)."""
    from ._rds import SEURAT_SPATIAL_R

    return str(SEURAT_SPATIAL_R)


def _anndata(counts, coordinates, spot_names, gene_names, library_size) -> ad.AnnData:
    counts = sp.csr_matrix(counts.T) if sp.issparse(counts) else np.asarray(counts).T
    spot_names = [str(name) for name in np.atleast_1d(spot_names)]
    gene_names = [str(name) for name in np.atleast_1d(gene_names)]
    if counts.shape != (len(spot_names), len(gene_names)):
        raise InputError(f"counts are {counts.shape[1]} genes × {counts.shape[0]} spots, but {len(gene_names)} "
                         f"gene names and {len(spot_names)} spot names were given")
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.ndim != 2 or coordinates.shape[0] != len(spot_names):
        raise InputError(f"coordinates must be a matrix with one row per spot ({len(spot_names)}), got shape "
                         f"{coordinates.shape}")
    obs = pd.DataFrame(index=pd.Index(spot_names))
    if library_size is not None:
        obs["total_counts"] = np.asarray(library_size, dtype=np.float64)
    adata = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=pd.Index(gene_names)))
    adata.obsm["spatial"] = coordinates
    return adata


def _csc_pieces(matrix) -> dict:
    """A sparse matrix as the slots of R's dgCMatrix (reticulate 1.28 cannot convert SciPy's newer classes)."""
    matrix = sp.csc_matrix(matrix, dtype=np.float64)
    matrix.sort_indices()
    return {"i": matrix.indices.astype(np.int32), "p": matrix.indptr.astype(np.int32), "x": matrix.data,
            "dim": np.asarray(matrix.shape, dtype=np.int32)}


def _plain_column(column: pd.Series) -> list:
    if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype.kind in "OU":
        return column.astype(str).to_list()
    return column.to_numpy().tolist()
