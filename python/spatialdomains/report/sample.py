"""The per-sample step behind every report: read the inputs, find the domains, rank markers, run GO enrichment.

:func:`analyse` is what the report notebook runs, so ``spatialdomains report``, a batch, the Snakemake workflow and
R's ``domainReport`` all compute a sample the same way. Its tables and result file are written atomically when an
output folder is given.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import _utils
from .. import io as _io
from ..errors import InputError, option

#: Methods a report can run; 'precomputed' reports the domains already in ``obs[domain_key]``.
REPORT_METHODS = ("staig", "spotscape", "spami", "baseline", "precomputed")
#: Files written next to a report when an output folder is given (and ``clusters.csv`` for 10x inputs).
SAMPLE_FILES = {"markers": "markers.csv", "go": "go_enrichment.csv", "domains": "domains.csv",
                "result": "result.h5ad", "provenance": "provenance.json", "map": "domains.png"}


@dataclass
class SampleResult:
    """Everything a report shows: the expression AnnData with domains, the tables, and the provenance."""

    adata: ad.AnnData
    markers: pd.DataFrame
    go: pd.DataFrame
    record: dict
    multiomics: object | None = None  # the MuData of a SpaMI/baseline run (for the attention map)
    batch_key: str | None = None
    go_error: str | None = None
    timings: dict = field(default_factory=dict)
    label_key: str | None = None  # an annotation of the spots (e.g. a pathologist's layers) to compare with
    denoised: ad.AnnData | None = None  # the decoder's values of a few marker genes (Spotscape, SpaMI)
    transfer: pd.DataFrame | None = None  # each slice's annotation predicted from another slice's
    condition_key: str | None = None  # the obs column giving each slice's condition
    conditions: object | None = None  # tl.compare_conditions' result


#: Reports draw the denoised values of at most this many marker genes (one per domain).
DENOISED_GENES = 4

#: Reports compute pseudotime for samples up to this size (its cost grows linearly, but for larger samples it would
#: add minutes to every report); the report says how to compute it for larger ones.
PSEUDOTIME_MAX_SPOTS = 50_000

def analyse(inputs, *, sample: str = "sample", method: str = "staig", n_domains: int | None = None,
            modalities: dict | None = None, domain_key: str = "domain", species: str = "auto",
            key_type: str = "auto", ontology: str = "BP", gene_sets: str | None = None, engine: str = "auto",
            min_log2fc: float = 0.25, max_pvalue: float = 0.05, pvalue: str = "adjusted", seed: int = 0,
            epochs: int | None = None, device: str = "auto", cluster_method: str = "auto",
            refine: str | bool = "auto", image: str | None = None,
            image_scale: float = 1.0, outputs_dir: str | None = None, threads: int | None = None,
            interface: str = "python", progress: bool = False, label_key: str | None = None,
            condition_key: str | None = None, model_options: dict | None = None) -> SampleResult:
    """Run one sample from its input file(s) to domains, markers and GO terms (see the module docstring).

    ``inputs``: one path or several (slices to integrate); ``modalities``: name → path of further omics of the
    same section (SpaMI). ``image``: a tissue picture to draw domains on, at ``image_scale`` pixels per
    coordinate unit. GO enrichment failing (no annotation for the species, say) does not fail the sample: the
    report says why instead. ``interface``: whose words the messages use (the door that asked for the report;
    the notebook runs in a process of its own). ``progress``: each step, and the model's training, is reported
    on the process's own stderr (from the report's notebook: the terminal that asked for the report).
    ``label_key``: an ``obs`` column annotating the spots (e.g. layers drawn by a pathologist); the report
    cross-tabulates the domains against it, scores their agreement (ARI, NMI) and draws it on the tissue; with
    several slices, each slice's annotation is also predicted from the most annotated other slice (label transfer).
    ``condition_key``: with several slices, an ``obs`` column giving each slice's condition (e.g. control,
    disease); the report compares the conditions within each domain (genes and domain shares).
    ``refine``: majority vote of each spot's 15 nearest (``'auto'``: the method's choice; see
    :func:`spatialdomains.tl.find_domains`). ``model_options``: further settings of the method (e.g.
    ``{"library_size_key": "total_counts"}`` for STAIG, ``{"preset": "cells"}``), checked by the method like any
    other.
    """
    from ..errors import interface as speaking

    with speaking(interface), _utils.to_terminal(progress):
        return _analyse(inputs, sample=sample, method=method, n_domains=n_domains, modalities=modalities,
                        domain_key=domain_key, species=species, key_type=key_type, ontology=ontology,
                        gene_sets=gene_sets, engine=engine, min_log2fc=min_log2fc, max_pvalue=max_pvalue,
                        pvalue=pvalue, seed=seed, epochs=epochs, device=device, cluster_method=cluster_method,
                        refine=refine,
                        image=image, image_scale=image_scale, outputs_dir=outputs_dir, threads=threads,
                        progress=progress, label_key=label_key, condition_key=condition_key,
                        model_options=model_options)


def _analyse(inputs, *, sample, method, n_domains, modalities, domain_key, species, key_type, ontology, gene_sets,
             engine, min_log2fc, max_pvalue, pvalue, seed, epochs, device, cluster_method, refine, image, image_scale,
             outputs_dir, threads, progress, label_key, condition_key, model_options) -> SampleResult:
    from .. import analysis, tl

    check_options(method, n_domains, cluster_method, pvalue, max_pvalue, epochs, refine, model_options)
    timer = _utils.Timer()
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not paths:
        raise InputError("inputs: give at least one input file or folder")
    _utils.logger.info("%s: reading %s", sample, ", ".join(Path(str(p)).name for p in paths))
    with timer("read"):
        data, batch_key = _read_inputs(paths, method, modalities or {})
    _check_label_key(data, label_key, several_slices=batch_key is not None)
    _check_condition_key(data, condition_key, several_slices=batch_key is not None)
    multiomics = None
    with timer("domains"):
        if method == "precomputed":
            adata = data
            if domain_key not in adata.obs:
                raise InputError(f"method 'precomputed' reports the domains in obs['{domain_key}'], which does "
                                 f"not exist (obs columns: {', '.join(adata.obs)}); choose a method to find them")
            adata.obs[domain_key] = adata.obs[domain_key].astype("category")
        else:
            params = {**(model_options or {}), **({"n_epochs": epochs} if epochs is not None else {})}
            if threads:
                params["n_threads"] = int(threads)
            result = tl.find_domains(data, method, n_domains, batch_key=batch_key, cluster_method=cluster_method,
                                     refine=refine,
                                     random_state=seed, device=device, progress=progress, key_added=domain_key,
                                     **params)
            if hasattr(result, "mod"):
                multiomics, adata = result, _expression_modality(result, domain_key)
                if label_key is not None and label_key not in adata.obs:
                    from ..modalities import obs_column

                    adata.obs[label_key] = obs_column(result, label_key, adata.obs_names).to_numpy()
            else:
                adata = result
    if image is not None:
        _io.attach_image(adata, image, image_scale)
    with timer("umap"):
        representation = _representation(adata, method)
        tl.umap(adata, use_rep=representation, random_state=seed)
    pseudotime_note = None if method == "precomputed" else _pseudotime(adata, timer, sample, representation, seed)
    _utils.logger.info("%s: ranking marker genes of %d domains", sample, adata.obs[domain_key].nunique())
    with timer("markers"):
        markers = analysis.markers(adata, domain_key, min_log2fc=min_log2fc, max_pvalue=max_pvalue,
                                   pvalue=pvalue)
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
            go = analysis.enrich_go(markers, universe=adata.var_names, ontology=ontology, species=species,
                                    key_type=key_type, gene_sets=gene_sets, engine=engine)
        except InputError as error:  # the report explains; domains and markers stand on their own
            go_error = str(error)
            go = pd.DataFrame(columns=["domain", *analysis.enrichment.RESULT_COLUMNS])
    record = _record(adata, sample=sample, method=method, paths=paths, modalities=modalities, seed=seed,
                     go=go, go_error=go_error, timings=timer.seconds, representation=representation,
                     min_log2fc=min_log2fc, max_pvalue=max_pvalue, pvalue=pvalue)
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
                          conditions=extra["conditions"])
    if outputs_dir is not None:
        write_outputs(result, outputs_dir, domain_key=domain_key)
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
    from .. import tl

    extra = {"denoised": None, "denoised_note": None, "transfer": None, "conditions": None}
    if method in ("spotscape", "spami"):
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


def write_outputs(result: SampleResult, folder: str | os.PathLike, *, domain_key: str = "domain") -> list[str]:
    """Write the marker and GO tables, domains, result .h5ad and provenance (each atomically)."""
    from .. import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    io.write_csv(result.markers, folder / SAMPLE_FILES["markers"], index=False)
    io.write_csv(result.go, folder / SAMPLE_FILES["go"], index=False)
    table = result.adata.obs[[domain_key]].copy()
    table[["x", "y"]] = io.spatial_coordinates(result.adata)[:, :2]
    io.write_csv(table, folder / SAMPLE_FILES["domains"], index_label="barcode")
    io.write_h5ad(result.adata, folder / SAMPLE_FILES["result"])
    io.write_json(result.record, folder / SAMPLE_FILES["provenance"])
    _write_map(result, folder / SAMPLE_FILES["map"], domain_key)
    written = list(SAMPLE_FILES.values())
    if io.platform(result.adata) is not None:  # 10x data: domains for Loupe Browser or Xenium Explorer
        io.write_clusters(result.adata, folder / io.CLUSTERS_FILE, domain_key)
        written.append(io.CLUSTERS_FILE)
    return written


def _write_map(result: SampleResult, path: Path, domain_key: str) -> None:
    """A small picture of the domains on the tissue (the batch index shows it beside the sample)."""
    import matplotlib.pyplot as plt

    from .. import pl

    from .sections import slices_of

    name, part = slices_of(result)[0]  # one frame: the first slice of several
    figure, ax = plt.subplots(figsize=(4, 4), dpi=72)
    pl.domains(part, domain_key, ax=ax, image=name is None,
               title=result.record["sample"] + (f" ({name})" if name else ""))
    ax.get_legend().remove()
    with _utils.atomic_path(path) as staged:
        figure.savefig(staged, format="png", bbox_inches="tight")
    plt.close(figure)


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


def _read_inputs(paths: list, method: str, modalities: dict):
    from .. import io

    if method in ("spami", "baseline"):
        if len(paths) != 1:
            raise InputError(f"method '{method}' takes one section: one input (an .h5mu, or the RNA file with the "
                             "other omics as modalities)")
        path = str(paths[0])
        if path.lower().endswith(".h5mu"):
            if modalities:
                raise InputError("an .h5mu input already holds its modalities; leave the modality columns empty")
            return io.read_h5mu(path), None
        if not modalities and method == "spami":
            raise InputError("method 'spami' needs a second omics: give modality columns (e.g. modality_adt) or "
                             "an .h5mu input")
        return {"rna": io.read(path), **{name: io.read(p) for name, p in modalities.items()}}, None
    if modalities:
        raise InputError(f"modalities apply to methods spami and baseline, not '{method}'")
    if len(paths) == 1:
        return io.read(paths[0]), None
    from ..slices import DEFAULT_BATCH_KEY, slice_names

    if method == "precomputed":
        raise InputError("method 'precomputed' takes one input (already combined)")
    return dict(zip(slice_names([str(p) for p in paths]), [io.read(p) for p in paths])), DEFAULT_BATCH_KEY


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


def _record(adata, *, sample, method, paths, modalities, seed, go, go_error, timings, representation,
            min_log2fc, max_pvalue, pvalue) -> dict:
    record = _utils.json_safe(dict(adata.uns.get("spatialdomains", {})))
    record.pop("markers", None)
    clustering = record.get("cluster", {})
    return {
        "sample": sample,
        "inputs": [str(p) for p in paths],
        "modalities": {k: str(v) for k, v in (modalities or {}).items()},
        "method": method,
        "seed": seed,
        "n_spots": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_domains": int(adata.obs["domain"].nunique()) if "domain" in adata.obs else None,
        "qc": qc_numbers(adata),
        "representation": representation,
        "clustering_engine": clustering.get("backend") if isinstance(clustering, dict) else None,
        "markers": {"test": "wilcoxon (scanpy)", "correction": "benjamini-hochberg",
                    "min_log2fc": min_log2fc, "pvalue": pvalue, "max_pvalue": max_pvalue},
        "enrichment": {"engine": go.attrs.get("engine"), "annotation": go.attrs.get("annotation"),
                       "parameters": _utils.json_safe(go.attrs.get("parameters", {})), "error": go_error},
        "model": record,
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
        "versions": _utils.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def check_options(method: str, n_domains: int | None, cluster_method: str, pvalue: str, max_pvalue: float,
                  epochs: int | None, refine: str | bool = "auto", model_options: dict | None = None) -> None:
    """The report's own options, checked before any work (also before the report's notebook starts)."""
    from .. import methods
    from ..analysis.markers import PVALUES
    from ..tl.domains import check_cluster_options

    if method not in REPORT_METHODS:
        raise InputError(f"{option('method')} must be one of {', '.join(REPORT_METHODS)}, not '{method}'")
    check_cluster_options(cluster_method, refine, n_domains)
    if method == "precomputed" and (refine != "auto" or model_options):
        given = [option("refine", refine)] * (refine != "auto")
        given += [option(name, value) for name, value in (model_options or {}).items()]
        raise InputError(f"{', '.join(given)}: method 'precomputed' reports the domains given in the input; leave "
                         f"{'it' if len(given) == 1 else 'them'} out, or name a method to find the domains")
    preset = (model_options or {}).get("preset")
    if preset is not None and method != "precomputed" and preset not in methods.get(method).preset_names():
        raise InputError(f"{option('preset', preset)} does not apply to method '{method}'; its presets: "
                         f"{', '.join(methods.get(method).preset_names())}")
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1):
        raise InputError(f"{option('epochs', epochs)}: training needs at least 1 epoch")
    if pvalue not in PVALUES:
        raise InputError(f"pvalue must be one of {', '.join(PVALUES)}, not '{pvalue}'")
    if not 0 < max_pvalue <= 1:
        raise InputError(f"max_pvalue must be in (0, 1], got {max_pvalue}")
    if epochs is not None and method != "precomputed" and "n_epochs" not in methods.get(method).option_names():
        raise InputError(f"epochs does not apply to method '{method}', which trains no model")
