"""Denoised (imputed) values from a method's decoder, and the masked-value test of how well they recover held-back
counts (the Spotscape paper's appendix: RMSE and median L1 on held-back non-zero entries, against the per-gene
mean).

Spotscape decodes expression (log1p of counts per 10,000 over the genes it used). SpaMI decodes each modality into
its preprocessed space: RNA principal components, mapped back to its highly variable genes on the log-normalised
scale, and protein CLR values, one per protein. SpaMI's ATAC reconstruction lives in LSI space, which does not map
back to peaks (each spot's components are standardised and the first dropped), so it is not offered.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._record import UNS_KEY, record_step
from ..errors import InputError, option

#: The methods whose decoders give expression back.
IMPUTING_METHODS = ("spotscape", "spami")


@dataclass
class _Denoised:
    """One modality's decoder output on the rows of the object holding it, and how observed counts are put on the
    same scale (``scale(counts)``: the modality's counts, all features, in those rows → spots × ``features``)."""

    values: object  # spots × features (NaN rows for spots the model left out); an array or a genes-wide layer
    columns: np.ndarray | None  # the features' columns in ``values`` when it is a layer over all genes, else None
    features: pd.DataFrame  # var of the features decoded
    counts: sp.csr_matrix  # the modality's raw counts on the same rows, every feature
    feature_columns: np.ndarray  # the decoded features' columns in ``counts``
    scale: Callable[[sp.csr_matrix], object]
    scale_name: str
    holder: ad.AnnData  # where obs, obsm and the image come from
    modality: str
    spatial_uns: dict  # the image record of the modality, when the holder has none

    def at(self, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The decoded values at (row, feature index) pairs, without a dense copy of the whole matrix."""
        columns = features if self.columns is None else self.columns[features]
        return np.asarray(self.values[rows, columns], dtype=np.float64).ravel()

    def dense(self) -> np.ndarray:
        values = self.values if self.columns is None else self.values[:, self.columns]
        return np.array(values.toarray() if sp.issparse(values) else values, dtype=np.float32)

    def only(self, genes) -> "_Denoised":
        """The same source restricted to the features named, in that order."""
        asked = [str(gene) for gene in np.atleast_1d(genes)]
        where = self.features.index.get_indexer(asked)
        if not asked or (where < 0).any():
            missing = [gene for gene, w in zip(asked, where) if w < 0]
            raise InputError(f"{option('genes')}: {', '.join(missing[:5]) or 'none given'} not among the "
                             f"{len(self.features)} features the model decoded (e.g. "
                             f"{', '.join(map(str, self.features.index[:3]))})")
        full_scale = self.scale
        return dataclasses.replace(
            self, columns=where if self.columns is None else self.columns[where], features=self.features.iloc[where],
            feature_columns=self.feature_columns[where], scale=lambda counts: full_scale(counts)[:, where])


def impute(data, *, method: str = "spotscape", modality: str | None = None, genes=None, retrain: bool = False,
           **options) -> ad.AnnData:
    """The method's denoised values as a new AnnData (spots × the features decoded), for marker genes and plots
    (e.g. ``sd.analysis.markers(imputed, "domain")``).

    ``X`` is the decoder output, clipped at 0, one dense float32 array, NaN rows for spots the model left out
    (e.g. without counts); ``layers['observed']`` holds the observed values on the same scale; ``obs``/``obsm``
    are the input's. Spotscape: its genes on its scale (log1p of counts per 10,000 over those genes). SpaMI
    (``data`` a MuData or dict of modalities): ``modality`` names the one wanted (default: the RNA one); RNA
    comes back for its highly variable genes on SpaMI's scale (log1p of counts per 10,000 over the genes detected
    in at least ``min_cells`` spots), protein as CLR values.

    The method is trained on ``data`` (its outputs added there as usual) unless it already ran and ``retrain`` is
    False; ``options`` are its settings and run options. ``genes`` (names) keeps only those features, so a large
    sample costs spots × len(genes), not spots × all genes. ``uns['spatialdomains']`` holds the training's record and,
    under ``'impute'``, the source and scale.
    """
    from ..methods.base import RUN_OPTIONS
    from ..pipeline import run_method

    _check_method(method)
    settings = sorted(set(options) - RUN_OPTIONS)
    if not retrain:
        _refuse_values_not_kept(data, method, modality)
    if retrain or not _trained(data, method):
        _check_before_training(data, method, modality, genes, options)
        data = run_method(method, data, **options)
    elif settings:
        raise InputError(f"{method} already ran on this object, so {', '.join(settings)} would not be used: give "
                         f"{option('retrain', True)} to train again with them")
    source = _denoised_source(data, method, modality)
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
    """The features whose denoised values ``method`` left in ``data`` (after a run), in its order: what
    :func:`impute` can return, and what its ``genes`` may name."""
    _check_method(method)
    _refuse_values_not_kept(data, method, modality)
    if not _trained(data, method):
        raise InputError(f"{method} has not run on this object: run sd.tl.impute(data, method='{method}') to train it")
    return pd.Index(_denoised_source(data, method, modality).features.index)


def evaluate_imputation(data, *, method: str = "spotscape", modality: str | None = None, fraction: float = 0.1,
                        genes=None, random_state: int = 0, **options) -> dict:
    """Hold back ``fraction`` of the non-zero counts of the modality decoded (set to 0, seeded), train on the
    rest, and compare the decoder output with the true values at the held-back entries, on the method's scale
    (see :func:`impute`; ``modality`` as there).

    Returns (and records in ``uns['spatialdomains']['imputation']`` of ``data``, unless it is a dict) the RMSE and median L1 distance
    of the method and of the per-feature mean of the masked data (the floor), over the held-back entries of the
    features decoded. ``data`` itself is not trained on; only the record is added. ``genes`` (names) scores only
    those features, e.g. the markers you care about; features without spatial pattern are best predicted by
    their mean.
    """
    from ..pipeline import configure, run_method

    if not 0 < fraction < 1:
        raise InputError(f"{option('fraction', fraction)}: give a share of the non-zero counts between 0 and 1")
    _check_method(method)
    configure(method, data, random_state=random_state, **options)  # every option checked before any work
    started = time.perf_counter()
    if method == "spami":
        pair = _pair_for(data, options)
        chosen = _choose_modality(pair, modality)
        counts, row_names = pair.counts[chosen], pair.spot_names
        feature_names = pair.feature_names[chosen]
    else:
        from ..io import spatial_coordinates

        spatial_coordinates(data)
        layer = options.get("layer")
        counts = sp.csr_matrix(data.layers[layer] if layer else data.X, dtype=np.float32)
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
    if method == "spami":
        work = {name: _bare(masked if j == chosen else part, pair.spot_names, pair.feature_names[j], pair.coordinates)
                for j, (name, part) in enumerate(zip(pair.names, pair.counts))}
        options = {key: value for key, value in options.items() if key != "layers"}
        options["modality_kinds"] = dict(zip(pair.names, pair.kinds))  # the bare copies' kinds, as paired
        work = run_method(method, work, random_state=random_state, **options)
        source = _denoised_source(work, method, pair.names[chosen])
    else:
        work = _bare(masked, data.obs_names, data.var_names, np.asarray(data.obsm["spatial"]))
        if options.get("batch_key"):
            work.obs[options["batch_key"]] = data.obs[options["batch_key"]].to_numpy()
        options = {key: value for key, value in options.items() if key != "layer"}
        run_method(method, work, random_state=random_state, **options)
        source = _denoised_source(work, method, None)
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
    truth = _entries(source.scale(_rows_to(counts, row_names, source.holder.obs_names)), rows, features)
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


def _check_method(method: str) -> None:
    if method not in IMPUTING_METHODS:
        raise InputError(f"{option('method', method)}: denoised values come from the decoders of "
                         f"{' and '.join(IMPUTING_METHODS)}")


def _check_before_training(data, method: str, modality: str | None, genes, options: dict) -> None:
    """What can be checked before a long training: the modality to impute and the genes asked for exist."""
    if method == "spami":
        pair = _pair_for(data, options)
        chosen = _choose_modality(pair, modality)
        known = pair.feature_names[chosen]
    else:
        known = data.var_names if isinstance(data, ad.AnnData) else None
    if genes is not None and known is not None:
        missing = [str(g) for g in np.atleast_1d(genes) if str(g) not in known]
        if missing:
            raise InputError(f"{option('genes')}: {', '.join(missing[:5])} not among the features "
                             f"(e.g. {', '.join(map(str, known[:3]))})")


def _refuse_values_not_kept(data, method: str, modality: str | None) -> None:
    """Above a limit of spots × genes the denoised genes are not kept (Spotscape's large-data mode; SpaMI's RNA
    back-projection, whose other modalities are kept): say so, and how to get them, rather than train again to
    the same end."""
    record = getattr(data, "uns", {}).get(UNS_KEY, {}).get(method, {})
    training = record.get("training") or {}
    if training.get("denoised_kept") is not False:
        return
    from ..models.minibatch import DENOISED_LIMIT

    if method == "spami":
        names = [str(name) for name in record["modalities"]]
        kinds = dict(zip(names, (str(kind) for kind in record["kinds"])))
        if kinds[_choose_name(names, kinds, modality)] != "rna":
            return
        most = DENOISED_LIMIT // max(int(record.get("n_spots_used", 1)), 1)
        fix = (f"train again with at most {most:,} genes ({option('retrain', True)}, "
               f"{option('n_top_genes', min(most, 3000))}); the other modalities' values are kept")
    else:
        fix = (f"train again with fewer genes ({option('n_top_genes')}) or, if memory allows, in full batch "
               f"({option('retrain', True)}, {option('training', 'full')})")
    raise InputError(f"{method} ran on {record.get('n_spots_used', 'many')} spots, and its denoised values of every "
                     f"spot and gene (more than {DENOISED_LIMIT:,}) were not kept: {fix}")


def _trained(data, method: str) -> bool:
    uns = getattr(data, "uns", None)
    if uns is None or method not in uns.get(UNS_KEY, {}):
        return False
    if method == "spami":
        return any(key.startswith(("spami_recon_", "spami_denoised_")) for key in data.obsm)
    return "spotscape_denoised" in data.layers or "spotscape_denoised" in data.obsm


def _pair_for(data, options: dict):
    from ..modalities import pair_modalities

    return pair_modalities(data, modality_kinds=options.get("modality_kinds"), layers=options.get("layers"))


def _choose_modality(pair, modality: str | None) -> int:
    """The index in ``pair`` of the modality to impute (see :func:`_choose_name`)."""
    return pair.names.index(_choose_name(list(pair.names), dict(zip(pair.names, pair.kinds)), modality))


def _denoised_source(holder, method: str, modality: str | None) -> _Denoised:
    """Where ``method`` left its decoder output in ``holder`` and how observed counts map to its scale."""
    record = holder.uns[UNS_KEY][method]
    if method == "spotscape":
        names = np.asarray(record["denoised_genes"], dtype=str)
        columns = holder.var_names.get_indexer(names)
        if (columns < 0).any():
            raise InputError(f"{int((columns < 0).sum())} genes of the {method} run are no longer in var_names: "
                             f"train again ({option('retrain', True)})")
        in_layers = "spotscape_denoised" in holder.layers
        return _Denoised(values=holder.layers["spotscape_denoised"] if in_layers else holder.obsm["spotscape_denoised"],
                         columns=columns if in_layers else None, features=holder.var.iloc[columns],
                         counts=_counts(holder, record), feature_columns=columns,
                         scale=lambda counts: _log_normalised(counts[:, columns]),
                         scale_name="log1p of counts per 10,000 over the genes used", holder=holder,
                         modality="rna", spatial_uns={})
    return _spami_source(holder, record, modality)


def _spami_source(holder, record: dict, modality: str | None) -> _Denoised:
    """SpaMI's reconstruction of one modality, read from the object it trained on (a MuData; or the RNA modality
    alone with the results, as a report's result .h5ad holds it). The log-normalised scale of RNA is rebuilt on the
    spots SpaMI used, over the genes detected in at least ``min_cells`` of them, as its preprocessing did."""
    from .. import io as _io
    from ..modalities import infer_kind, modality_mapping

    parameters = record.get("parameters", {})
    names = [str(name) for name in record["modalities"]]
    kinds = dict(zip(names, (str(kind) for kind in record["kinds"])))
    name = _choose_name(names, kinds, modality)
    mapping = modality_mapping(holder)
    if name in mapping:
        part = mapping[name]
    elif isinstance(holder, ad.AnnData) and infer_kind(name, holder, allow_unknown=True) in (None, kinds[name]):
        part = holder  # the modality itself, holding the section's results
    else:
        raise InputError(f"modality '{name}' of the SpaMI run is not in this object (it holds "
                         f"{', '.join(mapping)}): pass the MuData SpaMI trained on")
    key = "spami_denoised_rna" if kinds[name] == "rna" else f"spami_recon_{name}"
    if key not in holder.obsm:
        raise InputError(f"obsm['{key}'] is missing: train again ({option('retrain', True)})")
    columns = part.var_names.get_indexer(np.asarray(record["features"][name], dtype=str))
    if (columns < 0).any():
        raise InputError(f"{int((columns < 0).sum())} features of the SpaMI run are no longer in modality "
                         f"'{name}': train again ({option('retrain', True)})")
    layer = (parameters.get("layers") or {}).get(name)
    counts = _rows_to(sp.csr_matrix(_io._expression(part, layer), dtype=np.float32), part.obs_names,
                      holder.obs_names)
    used = np.flatnonzero(np.isfinite(np.asarray(holder.obsm[key], dtype=np.float64)).all(axis=1))
    if kinds[name] == "rna":
        detected = np.flatnonzero(np.asarray((counts[used] > 0).sum(axis=0)).ravel()
                                  >= int(parameters.get("min_cells", 10)))
        within = np.searchsorted(detected, columns)
        if (within >= len(detected)).any() or not np.array_equal(detected[np.minimum(within, len(detected) - 1)],
                                                                 columns):
            raise InputError(f"modality '{name}' no longer holds the counts SpaMI trained on: train again "
                             f"({option('retrain', True)})")
        scale = lambda matrix: _log_normalised(matrix[:, detected])[:, within]  # noqa: E731
        scale_name = (f"log1p of counts per 10,000 over the genes detected in at least "
                      f"{int(parameters.get('min_cells', 10))} spots (SpaMI's RNA scale)")
    else:
        from ..pp import clr

        scale = lambda matrix: clr(matrix[:, columns])  # noqa: E731
        scale_name = "CLR of the protein counts (SpaMI's form)"
    return _Denoised(values=holder.obsm[key], columns=None, features=part.var.iloc[columns], counts=counts,
                     feature_columns=columns, scale=scale, scale_name=scale_name, holder=holder, modality=name,
                     spatial_uns=part.uns.get("spatial", {}))


def _choose_name(names: list[str], kinds: dict, modality: str | None) -> str:
    """The modality to impute: the one named, else the RNA one, else the first decodable; ATAC refused."""
    if modality is not None:
        if modality not in names:
            raise InputError(f"{option('modality', modality)} is not a modality here (modalities: "
                             f"{', '.join(names)})")
        name = modality
    else:
        decodable = [n for n in names if kinds[n] != "atac"]
        name = next((n for n in decodable if kinds[n] == "rna"), decodable[0] if decodable else names[0])
    if kinds[name] == "atac":
        raise InputError(f"modality '{name}' holds ATAC peaks, whose SpaMI reconstruction is in LSI space and does "
                         "not map back to peaks (each spot's components are standardised and the first dropped): "
                         f"impute {option('modality')} RNA or protein instead")
    return name


def _bare(counts: sp.csr_matrix, spots, features, coordinates: np.ndarray) -> ad.AnnData:
    """Counts with their names and coordinates only: what the masked test trains on."""
    work = ad.AnnData(counts, obs=pd.DataFrame(index=pd.Index(spots, dtype=str)),
                      var=pd.DataFrame(index=pd.Index(features, dtype=str)))
    work.obsm["spatial"] = np.asarray(coordinates)
    return work


def _rows_to(counts: sp.csr_matrix, names: pd.Index, target: pd.Index) -> sp.csr_matrix:
    """``counts`` (rows named ``names``) in the row order of ``target``; rows not in ``names`` are empty."""
    where = pd.Index(names).get_indexer(target)
    if np.array_equal(where, np.arange(len(names))):
        return counts
    found = np.flatnonzero(where >= 0)
    selector = sp.csr_matrix((np.ones(len(found), dtype=np.float32), (found, where[found])),
                             shape=(len(target), counts.shape[0]))
    return sp.csr_matrix(selector @ counts)


def _entries(matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    values = matrix[rows, columns]
    return np.asarray(values.todense() if sp.issparse(values) else values, dtype=np.float64).ravel()


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
