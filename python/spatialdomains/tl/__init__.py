"""Tools, scanpy style: AnnData in, results added to ``obsm``/``obs``/``uns``; the input data are left as they were.

Each model function is one door into the shared pipeline (:mod:`spatialdomains.pipeline`): its keyword
arguments are the method's config fields (see :mod:`spatialdomains.methods`) and the run options (seed,
device, ...). Every run records its parameters, seeds, versions and timings in ``uns['spatialdomains'][<step>]``.
"""
from __future__ import annotations

import anndata as ad

from ..domains import cluster
from .domains import leiden, umap
from .conditions import compare_conditions
from .impute import decoded_features, evaluate_imputation, impute
from .pseudotime import pseudotime
from .transfer import match_slices, transfer_labels
from .tuning import select_learning_rate


def staig(adata, *, config=None, **options) -> ad.AnnData:
    """Learn a STAIG embedding from gene expression, optionally guided by the H&E image.

    The projection head's output goes to ``obsm['X_staig']`` and the encoder's to ``obsm['X_staig_encoder']``.
    Spots without counts get NaN rows.

    Parameters
    ----------
    adata : anndata.AnnData or list or dict of anndata.AnnData
        Raw counts in ``X`` (or ``layers[layer]``) and coordinates in ``obsm['spatial']``. A list (or dict) of
        such AnnData, one per slice, is integrated: one graph per slice in its own coordinates, genes highly
        variable in every slice, negatives from the anchor's own slice. One AnnData holding several slices
        names them with ``batch_key``. Image features, when used, are made per slice.
    config : spatialdomains.methods.StaigConfig, optional
        A whole config; ``options`` override its fields.
    **options
        The fields of :class:`~spatialdomains.methods.StaigConfig` (e.g. ``n_epochs``, ``tau``, ``use_image``,
        ``image_options``) and the run options of :class:`~spatialdomains.methods.RunConfig`
        (``preset='paper'``, ``'published'`` or ``'cells'``, ``random_state``, ``device``, ``deterministic``,
        ``progress``, ``checkpoint``, ``batch_key``, ``key_added``).

    Returns
    -------
    anndata.AnnData
        The AnnData holding the results. For several slices it is the combined AnnData (slice in
        ``obs[batch_key]``, 'slice' by default), and each slice also receives its own rows.
    """
    from ..pipeline import run_method

    return run_method("staig", adata, config=config, **options)


def spotscape(adata, *, config=None, **options) -> ad.AnnData:
    """Learn a Spotscape embedding into ``obsm['X_spotscape']``, and a denoised expression.

    Works on one or several slices, as :func:`staig` does. Several slices add similarity-scale matching and,
    after the warm-up, prototypes. The decoder output (log-normalised scale, over the genes used) goes to
    ``layers['spotscape_denoised']`` when the AnnData holds exactly those genes. Otherwise it goes to
    ``obsm['spotscape_denoised']``, with the gene names in
    ``uns['spatialdomains']['spotscape']['denoised_genes']``.

    Parameters
    ----------
    adata : anndata.AnnData or list or dict of anndata.AnnData
        One or several slices, as for :func:`staig`.
    config : spatialdomains.methods.SpotscapeConfig, optional
        A whole config; ``options`` override its fields.
    **options
        The fields of :class:`~spatialdomains.methods.SpotscapeConfig` and the run options (see :func:`staig`).

    Returns
    -------
    anndata.AnnData
        The AnnData holding the results (the combined one for several slices).
    """
    from ..pipeline import run_method

    return run_method("spotscape", adata, config=config, **options)


def spami(data, *, config=None, **options):
    """Learn a SpaMI embedding of paired omics measured on the same spots (RNA + protein, RNA + ATAC).

    Spots not in every modality, or without counts in one, get NaN rows.

    Parameters
    ----------
    data : mudata.MuData or dict of anndata.AnnData or anndata.AnnData
        A MuData, or a dict of modality name to AnnData, with raw counts in ``X`` and coordinates in
        ``obsm['spatial']`` of at least one modality (or of the MuData). Spots are matched by name. One
        AnnData is one modality, trained without the correspondence term.
    config : spatialdomains.methods.SpamiConfig, optional
        A whole config; ``options`` override its fields.
    **options
        The fields of :class:`~spatialdomains.methods.SpamiConfig` and the run options (see :func:`staig`).

    Returns
    -------
    mudata.MuData or anndata.AnnData
        The object holding the results: the MuData given, a new MuData built from a dict, or the AnnData
        given. It has ``obsm['X_spami']`` (fused), ``obsm['X_spami_<modality>']`` (per omics),
        ``obsm['spami_attention']`` (each spot's weight of each modality, in
        ``uns['spatialdomains']['spami']['modalities']`` order), ``obsm['spami_recon_<modality>']`` and, for
        RNA, ``obsm['spami_denoised_rna']``.
    """
    from ..pipeline import run_method

    return run_method("spami", data, config=config, **options)


def baseline(data, *, config=None, **options):
    """A floor to compare every model against: smoothed PCA of each modality, no training.

    Per modality, PCA of SpaMI's preprocessed features, each weighted equally, concatenated, then averaged over
    each spot and its nearest spots (``smoothing_spots`` in all).

    Parameters
    ----------
    data : anndata.AnnData or mudata.MuData or dict of anndata.AnnData
        Anything :func:`spami` takes.
    config : spatialdomains.methods.BaselineConfig, optional
        A whole config; ``options`` override its fields.
    **options
        The fields of :class:`~spatialdomains.methods.BaselineConfig` (e.g. ``smoothing_spots``) and the run
        options (see :func:`staig`).

    Returns
    -------
    anndata.AnnData or mudata.MuData
        The object holding the results, with the embedding in ``obsm['X_baseline']``.
    """
    from ..pipeline import run_method

    return run_method("baseline", data, config=config, **options)


def image_features(data, **options):
    """H&E image features of each spot, as STAIG uses them.

    Parameters
    ----------
    data : anndata.AnnData or list or dict of anndata.AnnData
        One or several slices with a tissue image.
    **options
        See :func:`spatialdomains.image.features.image_features`.

    Returns
    -------
    anndata.AnnData or list or dict of anndata.AnnData
        The input, with the features in ``obsm['X_image']`` (or ``obsm[key_added]``) of each slice.
    """
    from ..image.features import image_features as compute

    return compute(data, **options)


def find_domains(data, method: str = "staig", n_domains: int | None = None, *, cluster_method: str = "auto",
                 refine: str | bool = "auto", choose_by: str = "silhouette", key_added: str = "domain", **options):
    """One call from raw counts to domains: train ``method``, then cluster its embedding into ``obs[key_added]``.

    For a list (or dict) of slices, each slice receives its own embedding rows and domains.

    Parameters
    ----------
    data : anndata.AnnData or mudata.MuData or list or dict
        The input, as the method's function takes it.
    method : str, optional
        'staig' or 'spotscape' (gene expression, one or several slices), 'spami' (paired omics on one section)
        or 'baseline' (smoothed PCA of every modality, no training).
    n_domains : int or None, optional
        The number of domains. None chooses it: Spotscape with prototypes uses the number its training chose,
        so both agree; otherwise by ``choose_by``.
    cluster_method : str, optional
        As in :func:`cluster`. On 'auto', Spotscape clusters with k-means, as published, and so does the
        baseline.
    refine : str or bool, optional
        As in :func:`cluster`. The paired-omics methods do not refine on 'auto'.
    choose_by : str, optional
        'silhouette' or 'stability', as in :func:`cluster`.
    key_added : str, optional
        The ``obs`` column that receives the domains.
    **options
        The method's config fields and run options (see :func:`staig`). ``random_state`` seeds training and
        clustering alike.

    Returns
    -------
    anndata.AnnData or mudata.MuData
        The object holding the embedding and the domains (the combined AnnData for several slices).
    """
    from ..pipeline import find_domains as run

    return run(data, method, n_domains, cluster_method=cluster_method, refine=refine, choose_by=choose_by,
               key_added=key_added, **options)


__all__ = ["staig", "spotscape", "spami", "baseline", "image_features", "find_domains", "cluster", "leiden",
           "umap", "pseudotime", "match_slices", "transfer_labels", "impute", "decoded_features", "evaluate_imputation",
           "compare_conditions", "select_learning_rate"]
