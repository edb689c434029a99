"""The per-sample step behind every report: read the inputs, find the domains, rank markers, run GO enrichment.

:func:`analyse` is what the report notebook runs, so ``spatialdomains report``, a batch, the Snakemake workflow and
R's ``domainReport`` all compute a sample the same way. Its tables and result file are written atomically when an
output folder is given.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import _utils
from .. import io as _io
from ..errors import InputError, option
from .request import DOMAIN_KEY, ReportRequest
from .result import SampleResult

#: Reports draw the denoised values of at most this many marker genes (one per domain).
DENOISED_GENES = 4

#: Reports compute pseudotime for samples up to this size (its cost grows linearly, but for larger samples it would
#: add minutes to every report); the report says how to compute it for larger ones.
PSEUDOTIME_MAX_SPOTS = 50_000

def analyse(inputs=None, *, request: ReportRequest | dict | None = None, outputs_dir: str | None = None,
            interface: str = "python", methods: dict | None = None, **options) -> SampleResult:
    """Run one sample from its input file(s) to domains, markers and GO terms (see the module docstring).

    ``request`` says what to compute (a :class:`~spatialdomains.report.request.ReportRequest`, or the dict the
    report's notebook receives); or ``inputs`` and ``options`` as :meth:`ReportRequest.build` takes them. GO
    enrichment failing (no annotation for the species, say) does not fail the sample: the report says why instead.
    ``outputs_dir``: the sample's files are also written there (:func:`spatialdomains.results.write_sample`).
    ``interface``: whose words the messages use (the door that asked for the report; the notebook runs in a
    process of its own). With ``progress``, each step and the model's training are reported on the process's
    own stderr (from the report's notebook: the terminal that asked for the report). ``methods``: methods the
    process that asked registered itself, loaded here first (see :func:`spatialdomains.methods.session_method`).
    """
    from .. import methods as registry
    from ..errors import interface as speaking

    for name, where in (methods or {}).items():
        registry.load_session_method(name, where)
    with speaking(interface):
        if request is None:
            request = ReportRequest.build(inputs, **options)
        elif not isinstance(request, ReportRequest):
            request = ReportRequest.from_dict(request)
        with _utils.to_terminal(request.progress):
            return _analyse(request, outputs_dir)


def _analyse(request: ReportRequest, outputs_dir) -> SampleResult:
    from .. import analysis, tl

    sample, method, seed, label_key = request.sample_name(), request.method, request.seed, request.label_key
    condition_key, domain_key = request.condition_key, DOMAIN_KEY
    paths = list(request.inputs)
    timer = _utils.Timer()
    _utils.logger.info("%s: reading %s", sample, ", ".join(Path(str(p)).name for p in paths))
    with timer("read"):
        data, batch_key = _read_inputs(request)
    _check_label_key(data, label_key, several_slices=batch_key is not None)
    _check_condition_key(data, condition_key, several_slices=batch_key is not None)
    multiomics = None
    with timer("domains"):
        if not request.finds_domains:
            adata = data
            if domain_key not in adata.obs:
                raise InputError(f"{option('method', method)} reports the domains in obs['{domain_key}'], which does "
                                 f"not exist (obs columns: {', '.join(adata.obs)}); choose a method to find them")
            adata.obs[domain_key] = adata.obs[domain_key].astype("category")
        else:
            result = tl.find_domains(data, method, batch_key=batch_key, **request.domain_options())
            if hasattr(result, "mod"):
                multiomics, adata = result, _expression_modality(result, domain_key)
                if label_key is not None and label_key not in adata.obs:
                    from ..modalities import obs_column

                    adata.obs[label_key] = obs_column(result, label_key, adata.obs_names).to_numpy()
            else:
                adata = result
    if request.image is not None:
        _io.attach_image(adata, request.image, request.image_scale)
    with timer("umap"):
        representation = _representation(adata, method)
        tl.umap(adata, use_rep=representation, random_state=seed)
    pseudotime_note = _pseudotime(adata, timer, sample, representation, seed) if request.finds_domains else None
    _utils.logger.info("%s: ranking marker genes of %d domains", sample, adata.obs[domain_key].nunique())
    with timer("markers"):
        markers = analysis.markers(adata, domain_key, min_log2fc=request.min_log2fc,
                                   max_pvalue=request.max_pvalue, pvalue=request.pvalue)
    extra = _beyond_domains(adata, multiomics, markers, timer, sample=sample, method=method, batch_key=batch_key,
                            label_key=label_key, condition_key=condition_key, domain_key=domain_key,
                            representation=representation, seed=seed)
    go_error = None
    if "symbol" not in adata.var:  # the symbols looked up for the markers serve the QC (mitochondrial genes) too
        symbol_of = markers.drop_duplicates("gene").set_index("gene")["symbol"].astype(str)
        adata.var["symbol"] = symbol_of.reindex(adata.var_names).fillna(pd.Series(adata.var_names,
                                                                               index=adata.var_names)).to_numpy()
    _utils.logger.info("%s: GO enrichment", sample)
    with timer("enrichment"):
        try:
            go = analysis.enrich_go(markers, universe=adata.var_names, ontology=request.ontology,
                                    species=request.species, key_type=request.key_type,
                                    gene_sets=request.gene_sets, engine=request.engine)
        except InputError as error:  # the report explains; domains and markers stand on their own
            go_error = str(error)
            go = pd.DataFrame(columns=["domain", *analysis.enrichment.RESULT_COLUMNS])
    record = _record(adata, request, go=go, go_error=go_error, timings=timer.seconds,
                     representation=representation)
    if pseudotime_note:
        record["pseudotime_note"] = pseudotime_note
    if extra["denoised_note"]:
        record["denoised_note"] = extra["denoised_note"]
    if label_key is not None:
        from .. import metrics

        record["annotation"] = {"label_key": label_key,
                                **metrics.evaluate(adata.obs[label_key], adata.obs[domain_key])}
    if extra["transfer"] is not None:
        record["label_transfer"] = _utils.json_safe(extra["transfer"].to_dict(orient="records"))
    if extra["conditions"] is not None:
        record["conditions"] = _utils.json_safe(adata.uns["spatialdomains"]["compare_conditions"])
    if extra["denoised"] is not None:
        extra["denoised"].var["symbol"] = adata.var["symbol"].reindex(extra["denoised"].var_names).fillna(
            pd.Series(extra["denoised"].var_names, index=extra["denoised"].var_names)).to_numpy()
    result = SampleResult(adata=adata, markers=markers, go=go, record=record, multiomics=multiomics,
                          batch_key=batch_key, go_error=go_error, timings=timer.seconds, label_key=label_key,
                          denoised=extra["denoised"], transfer=extra["transfer"], condition_key=condition_key,
                          conditions=extra["conditions"], request=request)
    if outputs_dir is not None:
        write_outputs(result, outputs_dir)
    return result


def _pseudotime(adata, timer, sample: str, representation: str, seed: int) -> str | None:
    """Pseudotime over the model's embedding, up to :data:`PSEUDOTIME_MAX_SPOTS` spots; the page's note when it
    is left out or fails (the domains stand on their own)."""
    from .. import tl

    if adata.n_obs > PSEUDOTIME_MAX_SPOTS:
        return (f"Pseudotime is left out of reports of more than {PSEUDOTIME_MAX_SPOTS:,} spots; compute it "
                f"with sd.tl.pseudotime(adata, use_rep='{representation}') on the result .h5ad.")
    _utils.logger.info("%s: pseudotime over %s", sample, representation)
    with timer("pseudotime"):
        try:
            tl.pseudotime(adata, use_rep=representation, random_state=seed)
        except InputError as error:
            return f"Pseudotime could not be computed: {error}"
    return None


def _beyond_domains(adata, multiomics, markers, timer, *, sample, method, batch_key, label_key, condition_key,
                    domain_key, representation, seed) -> dict:
    """The analyses after the markers that apply to this sample: the decoder's denoised markers (Spotscape,
    SpaMI), label transfer between slices, and the conditions compared within each domain."""
    from .. import methods, tl

    extra = {"denoised": None, "denoised_note": None, "transfer": None, "conditions": None}
    if method in methods.names() and methods.get(method).decodes:
        with timer("denoised"):
            try:
                extra["denoised"] = _denoised_markers(multiomics if multiomics is not None else adata, method,
                                                      markers)
            except InputError as error:  # the report explains; the domains stand on their own
                extra["denoised_note"] = f"Denoised expression could not be shown: {error}"
    if batch_key is not None and label_key is not None:
        _utils.logger.info("%s: predicting each slice's %s from another slice", sample, label_key)
        with timer("label transfer"):
            extra["transfer"] = _transfer_between_slices(adata, batch_key, label_key, representation, seed)
    if condition_key is not None:
        _utils.logger.info("%s: comparing the conditions of obs['%s'] within each domain", sample, condition_key)
        with timer("conditions"):
            extra["conditions"] = tl.compare_conditions(adata, condition_key, domain_key=domain_key,
                                                        sample_key=batch_key)
    return extra


def write_outputs(result: SampleResult, folder: str | os.PathLike) -> list[str]:
    """The sample's files (:func:`spatialdomains.results.write_sample`) with the marker and GO tables: for paired
    omics the MuData the method trained on, else the analysed AnnData."""
    from ..results import write_sample

    holder = result.multiomics if result.multiomics is not None else result.adata
    return write_sample(folder, holder, result.record,
                        method=result.request.method if result.request.finds_domains else None,
                        slice_key=result.batch_key, tables={"markers": result.markers, "go": result.go})


def qc_numbers(adata: ad.AnnData) -> dict:
    """The medians of the QC metrics: counts and genes per spot, and the mitochondrial percentage when shown."""
    from ..pp import qc_metrics

    return {f"median {name}": float(np.median(values)) for name, values in qc_metrics(adata).items()}


def _check_label_key(data, label_key: str | None, several_slices: bool) -> None:
    """The annotation column exists (checked before any training): in at least one slice (the others get an empty
    one, to be annotated by label transfer), or in any modality of paired omics (a MuData's own obs included)."""
    from ..modalities import obs_tables

    if label_key is None:
        return
    if several_slices:  # an annotated slice can annotate the others (label transfer): one is enough
        if not any(label_key in part.obs for part in data.values()):
            columns = sorted({str(c) for part in data.values() for c in part.obs.columns})
            raise InputError(f"{option('label_key')}: no slice has obs['{label_key}'] (obs columns: "
                             f"{', '.join(columns)})")
        for part in data.values():  # our copies, read from the files: the slices without it are unannotated
            if label_key not in part.obs:
                part.obs[label_key] = pd.Categorical([None] * part.n_obs)
        return
    tables = obs_tables(data)
    if not any(label_key in table for table in tables):
        columns = sorted({str(c) for table in tables for c in table.columns})
        raise InputError(f"{option('label_key')}: obs['{label_key}'] does not exist (obs columns: "
                         f"{', '.join(columns)})")


def _check_condition_key(data, condition_key: str | None, several_slices: bool) -> None:
    """Conditions are compared between slices: several slices, each with the column and one value in it, and at
    least two conditions (checked before any training)."""
    if condition_key is None:
        return
    if not several_slices:
        raise InputError(f"{option('condition_key')} compares slices: give several inputs (one per slice), each "
                         f"with obs['{condition_key}'] naming its condition")
    conditions = {}
    for name, part in data.items():
        if condition_key not in part.obs:
            raise InputError(f"{option('condition_key')}: slice '{name}' has no obs['{condition_key}'] (obs columns: "
                             f"{', '.join(map(str, part.obs.columns)) or 'none'})")
        values = part.obs[condition_key].dropna().astype(str).unique()
        if len(values) != 1:
            raise InputError(f"{option('condition_key')}: slice '{name}' has {len(values)} conditions in "
                             f"obs['{condition_key}'] ({', '.join(values[:5]) or 'none'}); each slice needs one")
        conditions[name] = values[0]
    if len(set(conditions.values())) < 2:
        raise InputError(f"{option('condition_key')}: every slice has the condition '{next(iter(conditions.values()))}'"
                         "; comparing needs at least two conditions")


def _denoised_markers(holder, method: str, markers: pd.DataFrame) -> ad.AnnData | None:
    """The decoder's values of the top marker gene of each domain (up to :data:`DENOISED_GENES`), or None when no
    marker is among the genes the model decoded."""
    from .. import tl

    decoded = set(tl.decoded_features(holder, method=method))
    up = markers[markers["significant"] & (markers["log2fc"] > 0) & markers["gene"].astype(str).isin(decoded)]
    genes, domains = [], []
    for domain in markers["domain"].cat.categories:
        ranked = up[up["domain"] == domain].sort_values("score", ascending=False)["gene"].astype(str)
        gene = next((g for g in ranked if g not in genes), None)
        if gene is not None:
            genes.append(gene)
            domains.append(str(domain))
        if len(genes) == DENOISED_GENES:
            break
    if not genes:
        return None
    imputed = tl.impute(holder, method=method, genes=genes)
    imputed.var["marker_of"] = domains
    return imputed


def _transfer_between_slices(adata: ad.AnnData, batch_key: str, label_key: str, representation: str,
                             seed: int) -> pd.DataFrame | None:
    """Each other slice's ``label_key`` predicted from the slice with the most annotated spots (SLAT's matching
    rule, :func:`spatialdomains.tl.transfer_labels`), scored where the slice has its own annotation. The predictions
    go to ``adata.obs['<label_key>_transferred']`` and ``_confidence``; None with fewer than two slices or no
    annotated slice."""
    from .. import tl

    slices = adata.obs[batch_key].astype(str)
    annotated = adata.obs[label_key].notna().groupby(slices.to_numpy(), observed=True).sum()
    if len(annotated) < 2 or annotated.max() == 0:
        return None
    reference_name = str(annotated.idxmax())

    def light(name: str, with_labels: bool) -> ad.AnnData:
        rows = (slices == name).to_numpy()
        part = ad.AnnData(obs=adata.obs.loc[rows, [label_key]] if with_labels else adata.obs.loc[rows, []])
        part.obsm[representation] = np.asarray(adata.obsm[representation])[rows]
        part.obsm["spatial"] = np.asarray(adata.obsm["spatial"])[rows]
        return part

    reference = light(reference_name, True)
    key = f"{label_key}_transferred"
    predicted = pd.Series(pd.NA, index=adata.obs_names, dtype=object)
    confidence = pd.Series(np.nan, index=adata.obs_names)
    rows = []
    for name in annotated.index.astype(str):
        if name == reference_name:
            continue
        query = tl.transfer_labels(reference, light(name, bool(annotated[name])), label_key=label_key,
                                   use_rep=representation, random_state=seed)
        predicted[query.obs_names] = query.obs[key].astype(object).to_numpy()
        confidence[query.obs_names] = query.obs[f"{key}_confidence"].to_numpy()
        record = query.uns["spatialdomains"]["transfer_labels"]
        scores = record.get("scores") or {}  # a slice without its own annotation is not scored
        rows.append({"slice": name, "from slice": reference_name, "spots": int(query.n_obs),
                     "annotated spots": int(annotated[name]), "ARI": scores.get("ari", np.nan),
                     "NMI": scores.get("nmi", np.nan), "accuracy": scores.get("accuracy", np.nan),
                     "median confidence": record["median_confidence"]})
    labels = adata.obs[label_key]
    categories = list(labels.cat.categories) if isinstance(labels.dtype, pd.CategoricalDtype) else None
    adata.obs[key] = pd.Categorical(predicted.where(predicted.notna(), None).to_numpy(), categories=categories)
    adata.obs[f"{key}_confidence"] = confidence.to_numpy()
    return pd.DataFrame(rows)


def _read_inputs(request: ReportRequest):
    """The sample's data as the method takes it (checked with the request): one AnnData; the slices by name, with
    the column naming them; or the modalities of one section."""
    from .. import io

    paths = [str(p) for p in request.inputs]
    spec = request.method_spec()
    if spec is not None and spec.kind == "omics":
        if paths[0].lower().endswith(".h5mu"):
            return io.read_h5mu(paths[0]), None
        return {"rna": io.read(paths[0]), **{name: io.read(p) for name, p in request.modalities.items()}}, None
    samples = io.read_each(paths, table=request.table, coordinate_system=request.coordinate_system)
    if len(paths) == 1:
        return samples[0], None
    from ..slices import DEFAULT_BATCH_KEY, slice_names

    return dict(zip(slice_names(paths), samples)), DEFAULT_BATCH_KEY


def _expression_modality(mdata, domain_key: str) -> ad.AnnData:
    """The RNA modality of a paired-omics result, with the domains, embedding and coordinates of the section."""
    from ..modalities import infer_kind

    names = list(mdata.mod)
    chosen = next((n for n in names if infer_kind(n, mdata.mod[n]) == "rna"), names[0])
    rna = mdata.mod[chosen][mdata.obs_names].copy()
    rna.obs[domain_key] = mdata.obs[domain_key].to_numpy()
    rna.obs[domain_key] = rna.obs[domain_key].astype("category")
    for key in mdata.obsm:
        rna.obsm[key] = np.asarray(mdata.obsm[key])
    rna.uns["spatialdomains"] = dict(mdata.uns.get("spatialdomains", {}))
    if "spatial" in mdata.uns:
        rna.uns["spatial"] = mdata.uns["spatial"]
    return rna


def _representation(adata: ad.AnnData, method: str) -> str:
    key = f"X_{method}"
    if key in adata.obsm:
        return key
    candidates = [k for k in adata.obsm if k.startswith("X_") and k not in ("X_umap", "X_spatial")]
    if candidates:
        return candidates[0]
    import scanpy as sc

    from ..pp import log_normalise

    work = ad.AnnData(X=log_normalise(adata.X))
    sc.pp.pca(work, n_comps=min(30, adata.n_vars - 1, adata.n_obs - 1))
    adata.obsm["X_pca"] = work.obsm["X_pca"]
    return "X_pca"


def _record(adata, request: ReportRequest, *, go, go_error, timings, representation) -> dict:
    record = _utils.json_safe(dict(adata.uns.get("spatialdomains", {})))
    record.pop("markers", None)
    clustering = record.get("cluster", {})
    return {
        "sample": request.sample_name(),
        "inputs": [str(p) for p in request.inputs],
        "modalities": {k: str(v) for k, v in request.modalities.items()},
        "method": request.method,
        "seed": request.seed,
        "request": request.as_dict(),
        "n_spots": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_domains": int(adata.obs[DOMAIN_KEY].nunique()) if DOMAIN_KEY in adata.obs else None,
        "qc": qc_numbers(adata),
        "representation": representation,
        "clustering_engine": clustering.get("backend") if isinstance(clustering, dict) else None,
        "markers": {"test": "wilcoxon (scanpy)", "correction": "benjamini-hochberg",
                    "min_log2fc": request.min_log2fc, "pvalue": request.pvalue, "max_pvalue": request.max_pvalue},
        "enrichment": {"engine": go.attrs.get("engine"), "annotation": go.attrs.get("annotation"),
                       "parameters": _utils.json_safe(go.attrs.get("parameters", {})), "error": go_error},
        "model": record,
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "versions": _utils.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
