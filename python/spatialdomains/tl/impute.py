"""Denoised (imputed) values from a method's decoder, and the masked-value test of how well they recover held-back
counts (the Spotscape paper's appendix: RMSE and median L1 on held-back non-zero entries, against the per-gene
mean).

Spotscape decodes expression (log1p of counts per 10,000 over the genes it used). SpaMI decodes each modality into
its preprocessed space: RNA principal components, mapped back to its highly variable genes on the log-normalised
scale, and protein CLR values, one per protein. SpaMI's ATAC reconstruction lives in LSI space, which does not map
back to peaks (each spot's components are standardised and the first dropped), so it is not offered.
"""
from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._record import UNS_KEY, record_step
from ..errors import InputError, option
from ..methods._decoded import raw_counts, rows_to


def impute(data, *, method: str = "spotscape", modality: str | None = None, genes=None, retrain: bool = False,
           **options) -> ad.AnnData:
    """The method's denoised values as a new AnnData (spots × the features decoded).

    Use it for marker genes and plots (e.g. ``sd.analysis.markers(imputed, "domain")``). The method is trained
    on ``data`` (its outputs added there as usual) unless it already ran and ``retrain`` is False. Spotscape
    returns its genes on its scale (log1p of counts per 10,000 over those genes). SpaMI returns RNA for its
    highly variable genes on SpaMI's scale (log1p of counts per 10,000 over the genes detected in at least
    ``min_cells`` spots), and protein as CLR values.

    Parameters
    ----------
    data : anndata.AnnData or mudata.MuData or dict of anndata.AnnData
        The input of the method, or the object it already ran on. For SpaMI, a MuData or a dict of
        modalities.
    method : str, optional
        A method with a decoder ('spotscape', 'spami').
    modality : str or None, optional
        SpaMI: the modality wanted; by default the RNA one.
    genes : str or list of str or None, optional
        Names of the features to keep, so a large sample costs spots × len(genes), not spots × all genes.
    retrain : bool, optional
        Train again even when the method already ran on ``data``.
    **options
        The method's settings and run options, used when it trains.

    Returns
    -------
    anndata.AnnData
        ``X`` is the decoder output, clipped at 0, one dense float32 array, with NaN rows for spots the model
        left out (e.g. without counts). ``layers['observed']`` holds the observed values on the same scale;
        ``obs`` and ``obsm`` are the input's. ``uns['spatialdomains']`` holds the training's record and, under
        ``'impute'``, the source and scale.
    """
    from ..methods.base import RUN_OPTIONS
    from ..pipeline import run_method

    decoder = _decoder(method)
    settings = sorted(set(options) - RUN_OPTIONS)
    if not retrain:
        _refuse_values_not_kept(data, decoder, modality)
    if retrain or not _trained(data, decoder):
        _check_before_training(data, decoder, modality, genes, options)
        data = run_method(method, data, **options)
    elif settings:
        raise InputError(f"{method} already ran on this object, so {', '.join(settings)} would not be used: give "
                         f"{option('retrain', True)} to train again with them")
    source = decoder.denoised(data, modality)
    if genes is not None:
        source = source.only(genes)
    values = source.dense()
    np.maximum(values, 0.0, out=values, where=np.isfinite(values))  # in place; spots left out stay NaN
    holder = source.holder
    result = ad.AnnData(values, obs=holder.obs.copy(), var=source.features.copy())
    skipped = set(getattr(holder, "mod", {}))  # a MuData's per-modality masks
    for key, value in holder.obsm.items():
        if key not in skipped and not key.startswith(("spotscape_denoised", "spami_recon", "spami_denoised")):
            result.obsm[key] = value
    result.layers["observed"] = source.scale(source.counts)
    result.uns["spatial"] = holder.uns.get("spatial", source.spatial_uns)
    result.uns[UNS_KEY] = {method: holder.uns[UNS_KEY][method]}  # the training's record travels with its output
    record_step(result, "impute", {"method": method, "modality": source.modality, "n_features": values.shape[1],
                                   "scale": source.scale_name, "source": f"{method} decoder output",
                                   "n_spots_without_values": int((~np.isfinite(values).all(axis=1)).sum())})
    return result


def decoded_features(data, *, method: str = "spotscape", modality: str | None = None) -> pd.Index:
    """The features whose denoised values ``method`` left in ``data`` after a run, in its order.

    These are what :func:`impute` can return, and what its ``genes`` may name.

    Parameters
    ----------
    data : anndata.AnnData or mudata.MuData
        The object the method ran on.
    method : str, optional
        A method with a decoder ('spotscape', 'spami').
    modality : str or None, optional
        SpaMI: the modality, as in :func:`impute`.

    Returns
    -------
    pandas.Index
        The feature names.
    """
    decoder = _decoder(method)
    _refuse_values_not_kept(data, decoder, modality)
    if not _trained(data, decoder):
        raise InputError(f"{method} has not run on this object: run sd.tl.impute(data, method='{method}') to train it")
    return pd.Index(decoder.denoised(data, modality).features.index)


def evaluate_imputation(data, *, method: str = "spotscape", modality: str | None = None, fraction: float = 0.1,
                        genes=None, random_state: int = 0, **options) -> dict:
    """Score the decoder on counts held back from training.

    Holds back ``fraction`` of the non-zero counts of the modality decoded (set to 0, seeded), trains on the
    rest, and compares the decoder output with the true values at the held-back entries. The comparison is on
    the method's scale (see :func:`impute`). ``data`` itself is not trained on; only the record is added.

    Parameters
    ----------
    data : anndata.AnnData or mudata.MuData or dict of anndata.AnnData
        Raw counts, as the method takes them.
    method : str, optional
        A method with a decoder ('spotscape', 'spami').
    modality : str or None, optional
        SpaMI: the modality scored, as in :func:`impute`.
    fraction : float, optional
        The share of the non-zero counts held back, between 0 and 1.
    genes : str or list of str or None, optional
        Names of the only features scored, e.g. the markers you care about. Features without spatial pattern
        are best predicted by their mean.
    random_state : int, optional
        Seed of the held-back entries and of the training.
    **options
        The method's settings and run options.

    Returns
    -------
    dict
        The RMSE and median L1 distance of the method, and of the per-feature mean of the masked data (the
        floor), over the held-back entries of the features decoded. They are also recorded in
        ``uns['spatialdomains']['imputation']`` of ``data``, unless it is a dict.
    """
    from ..pipeline import configure

    if not 0 < fraction < 1:
        raise InputError(f"{option('fraction', fraction)}: give a share of the non-zero counts between 0 and 1")
    decoder = _decoder(method)
    configure(method, data, random_state=random_state, **options)  # every option checked before any work
    started = time.perf_counter()
    omics = decoder.kind == "omics"
    if omics:
        pair = _pair_for(data, options)
        chosen = _choose_modality(decoder, pair, modality)
        counts, row_names = pair.counts[chosen], pair.spot_names
        feature_names = pair.feature_names[chosen]
    else:
        from ..io import spatial_coordinates

        spatial_coordinates(data)
        counts = raw_counts(data, options.get("layer"))
        row_names, feature_names = data.obs_names, data.var_names
    wanted = None
    if genes is not None:
        asked = [str(gene) for gene in np.atleast_1d(genes)]
        wanted = feature_names.get_indexer(asked)
        if (wanted < 0).any():
            missing = [g for g, w in zip(asked, wanted) if w < 0]
            raise InputError(f"{option('genes')}: {', '.join(missing[:5])} not among the features scored")
    rng = np.random.default_rng(random_state)
    held = rng.random(counts.nnz) < fraction
    masked = counts.copy()
    masked.data[held] = 0
    masked.eliminate_zeros()
    source = _trained_on_masked(decoder, data, masked, pair if omics else None, chosen if omics else None,
                                random_state, options)
    to_holder = source.holder.obs_names.get_indexer(row_names)
    rows, cols = _held_entries(counts, held)
    decoded = np.full(counts.shape[1], -1)
    decoded[source.feature_columns] = np.arange(len(source.feature_columns))
    if wanted is not None:
        decoded[~np.isin(np.arange(counts.shape[1]), wanted)] = -1
    keep = (decoded[cols] >= 0) & (to_holder[rows] >= 0)
    rows, features = to_holder[rows[keep]], decoded[cols[keep]]
    predicted = source.at(rows, features)
    finite = np.isfinite(predicted)  # spots the model left out have no prediction
    rows, features, predicted = rows[finite], features[finite], predicted[finite]
    if len(rows) == 0:
        raise InputError(f"no held-back count falls in the features scored: give more {option('genes')} or a "
                         f"larger {option('fraction')}")
    truth = _entries(source.scale(rows_to(counts, row_names, source.holder.obs_names)), rows, features)
    trained_rows = np.flatnonzero(np.isfinite(source.at(np.arange(source.holder.n_obs),
                                                        np.zeros(source.holder.n_obs, dtype=int))))
    floor = np.asarray(source.scale(source.counts[trained_rows]).mean(axis=0), dtype=np.float64).ravel()[features]
    scores = {"n_held_back": int(len(rows)), "fraction": fraction, "method": method, "modality": source.modality,
              "scale": source.scale_name,
              "genes_scored": "all features decoded" if wanted is None else int(len(set(features.tolist()))),
              "rmse": _rmse(predicted, truth), "median_l1": float(np.median(np.abs(predicted - truth))),
              "rmse_gene_mean": _rmse(floor, truth),
              "median_l1_gene_mean": float(np.median(np.abs(floor - truth))),
              "random_state": random_state, "seconds": time.perf_counter() - started}
    if hasattr(data, "uns"):  # a dict of modalities has no place for the record
        record_step(data, "imputation", scores)
    return scores


def _trained_on_masked(decoder, data, masked, pair, chosen: int | None, random_state: int, options: dict):
    """The decoder's output after training on bare copies of the counts with the held-back entries masked: for
    paired omics every modality, the chosen one masked (``pair``, ``chosen``); else the one AnnData's."""
    from ..pipeline import run_method

    if pair is not None:
        work = {name: _bare(masked if j == chosen else part, pair.spot_names, pair.feature_names[j], pair.coordinates)
                for j, (name, part) in enumerate(zip(pair.names, pair.counts))}
        options = {key: value for key, value in options.items() if key != "layers"}
        options["modality_kinds"] = dict(zip(pair.names, pair.kinds))  # the bare copies' kinds, as paired
        work = run_method(decoder.name, work, random_state=random_state, **options)
        return decoder.denoised(work, pair.names[chosen])
    work = _bare(masked, data.obs_names, data.var_names, np.asarray(data.obsm["spatial"]))
    if options.get("batch_key"):
        work.obs[options["batch_key"]] = data.obs[options["batch_key"]].to_numpy()
    options = {key: value for key, value in options.items() if key != "layer"}
    run_method(decoder.name, work, random_state=random_state, **options)
    return decoder.denoised(work, None)


def _decoder(method: str):
    """The registered method ``method``, which must have a decoder."""
    from .. import methods

    decoding = [name for name, known in methods.capabilities().items() if known["decodes"]]
    if method not in decoding:
        raise InputError(f"{option('method', method)}: denoised values come from the decoders of "
                         f"{' and '.join(decoding)}")
    return methods.get(method)


def _check_before_training(data, decoder, modality: str | None, genes, options: dict) -> None:
    """What can be checked before a long training: the modality to impute and the genes asked for exist."""
    if decoder.kind == "omics":
        pair = _pair_for(data, options)
        known = pair.feature_names[_choose_modality(decoder, pair, modality)]
    else:
        known = data.var_names if isinstance(data, ad.AnnData) else None
    if genes is not None and known is not None:
        missing = [str(g) for g in np.atleast_1d(genes) if str(g) not in known]
        if missing:
            raise InputError(f"{option('genes')}: {', '.join(missing[:5])} not among the features "
                             f"(e.g. {', '.join(map(str, known[:3]))})")


def _refuse_values_not_kept(data, decoder, modality: str | None) -> None:
    """Above a limit of spots × genes the denoised values are not kept (the large-data modes): say so, and how to
    get them, rather than train again to the same end."""
    record = getattr(data, "uns", {}).get(UNS_KEY, {}).get(decoder.name, {})
    if (record.get("training") or {}).get("denoised_kept") is not False:
        return
    from ..models.minibatch import DENOISED_LIMIT

    fix = decoder.denoised_not_kept(record, modality)
    if fix is not None:
        raise InputError(f"{decoder.name} ran on {record.get('n_spots_used', 'many')} spots, and its denoised values "
                         f"of every spot and gene (more than {DENOISED_LIMIT:,}) were not kept: {fix}")


def _trained(data, decoder) -> bool:
    uns = getattr(data, "uns", None)
    return uns is not None and decoder.name in uns.get(UNS_KEY, {}) and decoder.has_denoised(data)


def _pair_for(data, options: dict):
    from ..modalities import pair_modalities

    return pair_modalities(data, modality_kinds=options.get("modality_kinds"), layers=options.get("layers"))


def _choose_modality(decoder, pair, modality: str | None) -> int:
    """The index in ``pair`` of the modality the decoder's output is wanted for."""
    return pair.names.index(decoder.choose_modality(list(pair.names), dict(zip(pair.names, pair.kinds)), modality))


def _bare(counts: sp.csr_matrix, spots, features, coordinates: np.ndarray) -> ad.AnnData:
    """Counts with their names and coordinates only: what the masked test trains on."""
    work = ad.AnnData(counts, obs=pd.DataFrame(index=pd.Index(spots, dtype=str)),
                      var=pd.DataFrame(index=pd.Index(features, dtype=str)))
    work.obsm["spatial"] = np.asarray(coordinates)
    return work


def _entries(matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    values = matrix[rows, columns]
    return np.asarray(values.todense() if sp.issparse(values) else values, dtype=np.float64).ravel()


def _held_entries(counts: sp.csr_matrix, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    return rows[held], counts.indices[held]


def _rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(truth)) ** 2)))
