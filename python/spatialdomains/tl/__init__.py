"""Tools, scanpy style: AnnData in, results added to ``obsm``/``obs``/``uns``; the input data are left as they were.

Each model function is one door into the shared pipeline (:mod:`spatialdomains.pipeline`): its keyword
arguments are the method's config fields (see :mod:`spatialdomains.methods`) and the run options (seed,
device, ...). Every run records its parameters, seeds, versions and timings in ``uns['spatialdomains'][<step>]``.
"""
from __future__ import annotations

import anndata as ad

from .domains import cluster, leiden, umap
from .conditions import compare_conditions
from .impute import decoded_features, evaluate_imputation, impute
from .pseudotime import pseudotime
from .transfer import match_slices, transfer_labels
from .tuning import select_learning_rate


def staig(adata, *, config=None, **options) -> ad.AnnData:
    """Learn a STAIG embedding (from gene expression, optionally guided by the H&E image) into ``obsm['X_staig']``
    (projection head) and ``obsm['X_staig_encoder']``.

    ``adata``: raw counts in ``X`` (or ``layers[layer]``), coordinates in ``obsm['spatial']``; or a list (or
    dict) of such AnnData, one per slice, integrated (one graph per slice in its own coordinates, genes highly
    variable in every slice, negatives from the anchor's own slice): the combined AnnData is returned (slice in
    ``obs[batch_key]``, 'slice' by default) and each slice receives its own rows. One AnnData holding several
    slices names them with ``batch_key``. Image features, when used, are made per slice.

    ``options``: the fields of :class:`~spatialdomains.methods.StaigConfig` (e.g. ``n_epochs``, ``tau``,
    ``use_image``, ``image_options``), the run options of :class:`~spatialdomains.methods.RunConfig`
    (``preset='paper'``, ``'published'`` or ``'cells'``, ``random_state``, ``device``, ``deterministic``, ``progress``,
    ``checkpoint``, ``batch_key``, ``key_added``); ``config`` a whole ``StaigConfig`` that they override.
    Spots without counts get NaN rows.
    """
    from ..pipeline import run_method

    return run_method("staig", adata, config=config, **options)


def spotscape(adata, *, config=None, **options) -> ad.AnnData:
    """Learn a Spotscape embedding into ``obsm['X_spotscape']`` and a denoised expression, for one or several
    slices (as in :func:`staig`; several slices add similarity-scale matching and, after the warm-up,
    prototypes).

    The decoder output (log-normalised scale, over the genes used) goes to ``layers['spotscape_denoised']`` when
    the AnnData holds exactly those genes, else to ``obsm['spotscape_denoised']`` with the gene names in
    ``uns['spatialdomains']['spotscape']['denoised_genes']``. ``options``: the fields of
    :class:`~spatialdomains.methods.SpotscapeConfig` and the run options.
    """
    from ..pipeline import run_method

    return run_method("spotscape", adata, config=config, **options)


def spami(data, *, config=None, **options):
    """Learn a SpaMI embedding of paired omics measured on the same spots (RNA + protein, RNA + ATAC).

    ``data``: a MuData, or a dict of modality name → AnnData (raw counts in ``X``; coordinates in
    ``obsm['spatial']`` of at least one modality, or of the MuData), or one AnnData (one modality, trained
    without the correspondence term). Spots are matched by name.

    Returns the object holding the results (the MuData given, a new MuData built from a dict, or the AnnData
    given): ``obsm['X_spami']`` (fused), ``obsm['X_spami_<modality>']`` (per omics), ``obsm['spami_attention']``
    (per-spot weight of each modality, in ``uns['spatialdomains']['spami']['modalities']`` order),
    ``obsm['spami_recon_<modality>']`` and, for RNA, ``obsm['spami_denoised_rna']``. Spots not in every
    modality, or without counts in one, get NaN rows. ``options``: the fields of
    :class:`~spatialdomains.methods.SpamiConfig` and the run options.
    """
    from ..pipeline import run_method

    return run_method("spami", data, config=config, **options)


def baseline(data, *, config=None, **options):
    """A floor to compare every model against, for anything :func:`spami` takes: per modality, PCA of SpaMI's
    preprocessed features, each weighted equally, concatenated and averaged over each spot and its nearest
    spots (``smoothing_spots`` in all). No training. Result in ``obsm['X_baseline']``."""
    from ..pipeline import run_method

    return run_method("baseline", data, config=config, **options)


def image_features(data, **options):
    """H&E image features of each spot, as STAIG uses them: see
    :func:`spatialdomains.image.features.image_features` for the options."""
    from ..image.features import image_features as compute

    return compute(data, **options)


def find_domains(data, method: str = "staig", n_domains: int | None = None, *, cluster_method: str = "auto",
                 refine: str | bool = "auto", choose_by: str = "silhouette", key_added: str = "domain", **options):
    """One call from raw counts to domains: train ``method``, then cluster its embedding into ``obs[key_added]``.

    ``method``: 'staig' or 'spotscape' (gene expression, one or several slices), 'spami' (paired omics on one
    section) or 'baseline' (smoothed PCA of every modality, no training). ``data`` as the method's function
    takes it; for a list (or dict) of slices the combined AnnData is returned and each slice receives its own
    embedding rows and domains. ``n_domains=None`` chooses the number: Spotscape with prototypes uses the number
    its training chose, so both agree; otherwise by ``choose_by`` ('silhouette' or 'stability', as in
    :func:`cluster`). ``cluster_method`` and ``refine`` as in :func:`cluster` (the paired-omics methods do not
    refine on 'auto'; on 'auto' Spotscape clusters with k-means, as published, and so does the baseline).
    ``random_state`` seeds training and clustering alike. ``options``: the method's config fields and run
    options (see :func:`staig`).
    """
    from ..pipeline import find_domains as run

    return run(data, method, n_domains, cluster_method=cluster_method, refine=refine, choose_by=choose_by,
               key_added=key_added, **options)


__all__ = ["staig", "spotscape", "spami", "baseline", "image_features", "find_domains", "cluster", "leiden",
           "umap", "pseudotime", "match_slices", "transfer_labels", "impute", "decoded_features", "evaluate_imputation",
           "compare_conditions", "select_learning_rate"]
