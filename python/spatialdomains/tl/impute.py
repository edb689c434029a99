"""Denoised (imputed) expression from Spotscape's decoder, and the masked-value test of how well it recovers
held-back counts (the Spotscape paper's appendix: RMSE and median L1 on held-back non-zero entries, against the
per-gene mean)."""
from __future__ import annotations

import time

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .._record import UNS_KEY, record_step
from ..errors import InputError, option

#: The methods whose decoders give expression back.
IMPUTING_METHODS = ("spotscape",)


def impute(adata: ad.AnnData, *, method: str = "spotscape", retrain: bool = False, **options) -> ad.AnnData:
    """The method's denoised expression as a new AnnData (spots × the genes the method used): ``X`` the decoder
    output (log-normalised scale, normalised to 10,000 over those genes, clipped at 0; NaN rows for spots the
    model left out, e.g. without counts; one dense spots × genes array of float32), ``layers['observed']``
    the observed values on the same scale, ``obs``/``obsm`` as in ``adata``. Marker genes and plots run on it
    as on any log-normalised data (e.g. ``sd.analysis.markers(imputed)``).

    The method is trained on ``adata`` (its outputs added there as usual) unless it already ran and
    ``retrain`` is False; ``options`` are its settings and run options.
    """
    from ..methods.base import RUN_OPTIONS
    from ..pipeline import run_method

    if method not in IMPUTING_METHODS:
        raise InputError(f"{option('method', method)}: imputation comes from {', '.join(IMPUTING_METHODS)}'s "
                         "decoder")
    settings = sorted(set(options) - RUN_OPTIONS)
    if retrain or not _has_denoised(adata, method):
        run_method(method, adata, **options)
    elif settings:
        raise InputError(f"{method} already ran on this AnnData, so {', '.join(settings)} would not be used: give "
                         f"{option('retrain', True)} to train again with them")
    record = adata.uns[UNS_KEY][method]
    genes = np.asarray(record["denoised_genes"], dtype=str)
    columns = adata.var_names.get_indexer(genes)
    if (columns < 0).any():
        raise InputError(f"{int((columns < 0).sum())} genes of the {method} run are no longer in var_names: train "
                         f"again ({option('retrain', True)})")
    if "spotscape_denoised" in adata.layers:
        values = np.array(adata.layers["spotscape_denoised"][:, columns], dtype=np.float32)
    else:
        values = np.array(adata.obsm["spotscape_denoised"], dtype=np.float32)
    np.maximum(values, 0.0, out=values, where=np.isfinite(values))  # in place; spots left out stay NaN
    result = ad.AnnData(values, obs=adata.obs.copy(), var=adata.var.iloc[columns].copy())
    for key, value in adata.obsm.items():
        if key != "spotscape_denoised":
            result.obsm[key] = value
    result.layers["observed"] = _log_normalised(_counts(adata, record)[:, columns])
    result.uns["spatial"] = adata.uns.get("spatial", {})
    record_step(result, "impute", {"method": method, "n_genes": len(genes), "scale": "log1p of counts per 10,000 "
                                   "over the genes used", "source": f"{method} decoder output",
                                   "n_spots_without_values": int((~np.isfinite(values).all(axis=1)).sum())})
    return result


def evaluate_imputation(adata: ad.AnnData, *, method: str = "spotscape", fraction: float = 0.1,
                        genes=None, random_state: int = 0, **options) -> dict:
    """Hold back ``fraction`` of the non-zero counts of the genes the method uses (set to 0, seeded), train on
    the rest, and compare the decoder output with the true log-normalised values at the held-back entries.

    Returns (and records in ``adata.uns['spatialdomains']['imputation']``) the RMSE and median L1 distance of the
    method and of the per-gene mean of the masked data (the floor), over the held-back entries. ``adata`` itself
    is not trained on; only the record is added. ``genes`` (names) scores only those of the genes used, e.g.
    the markers you care about; genes without spatial pattern are best predicted by their mean.
    """
    from ..pipeline import configure, run_method

    if not 0 < fraction < 1:
        raise InputError(f"{option('fraction', fraction)}: give a share of the non-zero counts between 0 and 1")
    if method not in IMPUTING_METHODS:
        raise InputError(f"{option('method', method)}: imputation comes from {', '.join(IMPUTING_METHODS)}'s "
                         "decoder")
    configure(method, adata, random_state=random_state, **options)  # every option checked before any work
    from ..io import spatial_coordinates

    spatial_coordinates(adata)
    wanted = None
    if genes is not None:
        wanted = adata.var_names.get_indexer([str(gene) for gene in np.atleast_1d(genes)])
        if (wanted < 0).any():
            missing = [str(g) for g, w in zip(np.atleast_1d(genes), wanted) if w < 0]
            raise InputError(f"{option('genes')}: {', '.join(missing[:5])} not in var_names")
    started = time.perf_counter()
    layer = options.get("layer")
    counts = sp.csr_matrix(adata.layers[layer] if layer else adata.X, dtype=np.float32)
    rng = np.random.default_rng(random_state)
    held = rng.random(counts.nnz) < fraction
    masked = counts.copy()
    masked.data[held] = 0
    masked.eliminate_zeros()
    work = ad.AnnData(masked, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    work.obsm["spatial"] = np.asarray(adata.obsm["spatial"])
    if options.get("batch_key"):
        work.obs[options["batch_key"]] = adata.obs[options["batch_key"]].to_numpy()
    options = {key: value for key, value in options.items() if key != "layer"}
    run_method(method, work, random_state=random_state, **options)
    record = work.uns[UNS_KEY][method]
    genes = work.var_names.get_indexer(np.asarray(record["denoised_genes"], dtype=str))
    in_layers = "spotscape_denoised" in work.layers
    denoised = work.layers["spotscape_denoised"] if in_layers else work.obsm["spotscape_denoised"]
    rows, cols = _held_entries(counts, held)
    in_genes = np.full(counts.shape[1], -1)
    in_genes[genes] = np.arange(len(genes))
    if wanted is not None:
        in_genes[~np.isin(np.arange(counts.shape[1]), wanted)] = -1
    keep = in_genes[cols] >= 0
    rows, cols, gene_columns = rows[keep], in_genes[cols[keep]], cols[keep]
    predicted = np.asarray(denoised[rows, gene_columns if in_layers else cols], dtype=np.float64)  # entries only
    finite = np.isfinite(predicted)  # spots the model left out have no prediction
    rows, cols, predicted = rows[finite], cols[finite], predicted[finite]
    truth = _log_normalised(counts[:, genes])[rows, cols].A1
    gene_means = np.asarray(_log_normalised(masked[:, genes]).mean(axis=0)).ravel()[cols]
    if len(rows) == 0:
        raise InputError(f"no held-back count falls in the genes scored: give more {option('genes')} or a larger "
                         f"{option('fraction')}")
    scores = {"n_held_back": int(len(rows)), "fraction": fraction, "method": method,
              "genes_scored": "all genes used" if wanted is None else int(len(set(cols.tolist()))),
              "rmse": _rmse(predicted, truth), "median_l1": float(np.median(np.abs(predicted - truth))),
              "rmse_gene_mean": _rmse(gene_means, truth),
              "median_l1_gene_mean": float(np.median(np.abs(gene_means - truth))),
              "random_state": random_state, "seconds": time.perf_counter() - started}
    record_step(adata, "imputation", scores)
    return scores


def _has_denoised(adata: ad.AnnData, method: str) -> bool:
    return method in adata.uns.get(UNS_KEY, {}) and ("spotscape_denoised" in adata.layers
                                                     or "spotscape_denoised" in adata.obsm)


def _counts(adata: ad.AnnData, record: dict) -> sp.csr_matrix:
    layer = record.get("parameters", {}).get("layer")
    return sp.csr_matrix(adata.layers[layer] if layer else adata.X, dtype=np.float32)


def _log_normalised(counts: sp.csr_matrix) -> sp.csr_matrix:
    """log1p of counts per 10,000 over the columns given (Spotscape's scale); spots without counts stay 0."""
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    values = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ counts)
    values.data = np.log1p(values.data)
    return values


def _held_entries(counts: sp.csr_matrix, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    return rows[held], counts.indices[held]


def _rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(truth)) ** 2)))
