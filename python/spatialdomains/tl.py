"""Tools, scanpy style: AnnData in, results added to ``obsm``/``obs``/``uns``; the input data are left as they were.

Every run records its parameters, seed, versions and timings in ``uns['spatialdomains'][<step>]``.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import anndata as ad
import numpy as np
import pandas as pd

from . import cluster as _cluster
from . import graph as _graph
from . import io as _io
from . import pp as _pp
from . import slices as _slices
from ._utils import Timer, h5ad_safe, json_safe, package_versions
from .errors import InputError

logger = logging.getLogger("spatialdomains")

METHODS = ("staig", "spotscape", "spami", "baseline")
#: Methods that take paired omics (a MuData or a dict of modality → AnnData) and one section.
MULTIOMICS_METHODS = ("spami", "baseline")
UNS_KEY = "spatialdomains"


def staig(
    adata,
    *,
    batch_key: str | None = None,
    preset: str = "paper",
    n_epochs: int | None = None,
    tau: float | None = None,
    learning_rate: float | None = None,
    n_neighbors: int | None = None,
    n_top_genes: int | None = None,
    n_layers: int | None = None,
    edge_drop: str | None = None,
    feature_mask: tuple[float, float] | None = None,
    positives: str | None = None,
    use_image: bool | None = None,
    image_key: str = "X_image",
    n_pseudo_labels: int | None = None,
    debias: bool | None = None,
    image_options: dict | None = None,
    memory_budget_mb: float | None = None,
    layer: str | None = None,
    library_size_key: str | None = None,
    random_state: int = 0,
    device: str = "auto",
    deterministic: bool = False,
    progress: bool = True,
    checkpoint: str | None = None,
    key_added: str = "X_staig",
) -> ad.AnnData:
    """Learn a STAIG embedding (from gene expression, optionally guided by the H&E image) into ``obsm[key_added]``.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (or ``layers[layer]``) and coordinates in ``obsm['spatial']``; or a list (or dict)
        of such AnnData, one per slice, for integration (see ``batch_key``).
    batch_key
        ``obs`` column naming each spot's slice. With several slices STAIG integrates them: one graph per slice
        in its own coordinates, genes highly variable in every slice (5000 per slice, no scaling), negatives
        drawn within the anchor's slice only. A list input is combined into one AnnData (returned), with the
        slice in ``obs[batch_key]`` ('slice' by default), and each input receives its own rows of the results.
    preset
        ``'paper'`` (default: τ 10, 400 epochs, fixed edge-drop 0.2, gene masks 0.1/0.2) or ``'published'``
        (the published code's gene-only 151673 config: τ 34, 340 epochs, adaptive edge drop, masks 0.2/0.2).
        With an image, their image variants: ``'paper'`` drops edges by image distance; ``'published'`` is the
        published 151673 image config (τ 35, 300 epochs, masks 0.1/0.2, 80 pseudo-labels).
        Any argument given explicitly overrides the preset.
    n_epochs, tau, learning_rate
        Training length, temperature of the contrastive loss and Adam's learning rate.
    n_neighbors
        k of the spatial kNN graph (5).
    n_top_genes
        Number of seurat_v3 highly variable genes used as features (3000).
    n_layers
        GCN layers in the encoder (1, or 2 for F → 128 → 64).
    edge_drop
        ``'fixed'`` (every edge dropped with probability 0.2), ``'gene_adaptive'`` or ``'image'`` (edges between
        spots that look different dropped more often; the default with an image).
    feature_mask
        Gene-masking rates of the two views.
    positives
        ``'full'``: neighbours in the full graph are positives (published); ``'view'``: in each view (paper text).
    use_image
        Use H&E image features from ``obsm[image_key]``. ``None`` (default): when they are there. ``True``:
        compute them first (:func:`image_features`, with ``image_options``) when missing; an input without any
        image then runs from gene expression alone, with a logged warning. ``False``: gene expression only.
        Several slices: features are computed per slice (each with its own image and PCA) before combining.
    image_key
        ``obsm`` key of the image features (``'X_image'``).
    n_pseudo_labels, debias
        One slice with an image: k-means of the image features into ``n_pseudo_labels`` groups (40); with
        ``debias`` (default) spots of the anchor's group are not used as its negatives.
    image_options
        Keyword arguments of :func:`image_features` (e.g. ``{'image': 'slide.tif', 'image_scale': 1.0,
        'backbone': 'resnet50', 'weights': 'resnet50.pth'}``) used when the features must be computed.
    memory_budget_mb
        Memory for one block of the N×N loss computation (256).
    layer
        Layer holding raw counts, if not ``X``.
    library_size_key
        ``obs`` column with the true per-spot total counts, when ``X`` holds only a subset of the genes.
    random_state, deterministic
        Seed of Python, NumPy and torch; ``deterministic`` asks torch for deterministic kernels.
    device
        ``'auto'`` (CUDA, then MPS, then CPU), or a torch device name.
    progress
        Show a progress bar.
    checkpoint
        Path where the trained model is saved (torch checkpoint), if given.
    key_added
        ``obsm`` key of the embedding; the encoder output goes to ``obsm[key_added + '_encoder']``.

    Returns
    -------
    The same AnnData, with the embeddings added (spots left out for having no counts get NaN rows).
    """
    if _is_slice_collection(adata):
        if use_image:
            slices = list(adata.values()) if isinstance(adata, dict) else list(adata)
            use_image = all([_image_features_ready(one, image_key, image_options, progress) for one in slices])
        return _on_combined_slices(staig, adata, batch_key, [key_added, f"{key_added}_encoder"], preset=preset,
                                   n_epochs=n_epochs, tau=tau, learning_rate=learning_rate, n_neighbors=n_neighbors,
                                   n_top_genes=n_top_genes, n_layers=n_layers, edge_drop=edge_drop,
                                   feature_mask=feature_mask, positives=positives, use_image=use_image,
                                   image_key=image_key, n_pseudo_labels=n_pseudo_labels, debias=debias,
                                   memory_budget_mb=memory_budget_mb,
                                   layer=layer, library_size_key=library_size_key, random_state=random_state,
                                   device=device, deterministic=deterministic, progress=progress,
                                   checkpoint=checkpoint, key_added=key_added)
    from .models import staig as model
    from .models.trainer import select_device

    if use_image is None:
        use_image = image_key in adata.obsm
        if use_image:
            logger.info("STAIG: using the image features in obsm['%s']", image_key)
    elif use_image:
        use_image = _image_features_ready(adata, image_key, image_options, progress, batch_key=batch_key)
    config = model.make_config(preset, image=use_image, n_epochs=n_epochs, tau=tau, learning_rate=learning_rate,
                               n_neighbors=n_neighbors, n_top_genes=n_top_genes, n_layers=n_layers,
                               edge_drop=edge_drop, feature_mask=feature_mask, positives=positives,
                               n_pseudo_labels=n_pseudo_labels, debias=debias, memory_budget_mb=memory_budget_mb)
    chosen_device = select_device(device)
    timer = Timer()
    with timer("preprocess"):
        checked = _io.check_input(adata, layer=layer, n_neighbors=config.n_neighbors)
        layout = _layout(adata, batch_key, checked.spots)
        library_size = _library_size(adata, library_size_key, checked.spots)
        if layout.n_slices == 1:
            features, genes = _pp.staig_features(checked.counts, n_top_genes=config.n_top_genes,
                                                 library_size=library_size)
        else:
            if n_top_genes is None:
                config = dataclasses.replace(config, n_top_genes=MULTI_SLICE_TOP_GENES)
            features, genes = _pp.multi_slice_features(
                checked.counts[layout.order], layout.bounds, n_top_genes=config.n_top_genes, normalise_over="all",
                slice_names=layout.names,
                library_size=None if library_size is None else library_size[layout.order])
    with timer("graph"):
        adjacency = _graph.multi_slice_graph(checked.coordinates[layout.order], layout.codes[layout.order],
                                             "knn", n_neighbors=config.n_neighbors)
    image = None
    if use_image:
        image = np.asarray(adata.obsm[image_key], dtype=np.float32)[checked.spots][layout.order]
        if not np.all(np.isfinite(image)):
            raise InputError(f"obsm['{image_key}'] has missing values for spots with counts: recompute it with "
                             "spatialdomains.tl.image_features")
    with timer("train"):
        result = model.train_staig(features, adjacency, config, slice_bounds=layout.bounds, image_features=image,
                                   device=chosen_device, random_state=random_state, deterministic=deterministic,
                                   progress=progress, checkpoint=checkpoint)
    adata.obsm[key_added] = _fill_spots(_unsort(result.embedding, layout), checked.spots)
    adata.obsm[f"{key_added}_encoder"] = _fill_spots(_unsort(result.encoder_embedding, layout), checked.spots)
    _record(adata, "staig", {
        "preset": preset,
        "image_key": image_key if use_image else None,
        "parameters": result.record.pop("config"),
        "random_state": random_state,
        "deterministic": deterministic,
        "layer": layer,
        "library_size_key": library_size_key,
        "key_added": key_added,
        **_slice_record(layout, batch_key),
        "n_spots_used": int(checked.spots.sum()),
        "n_spots_left_out": int((~checked.spots).sum()),
        "genes": np.asarray(checked.gene_names[genes], dtype=str),
        "n_edges": int(adjacency.nnz // 2),
        "training": result.record,
        "timings": timer.seconds,
        "versions": package_versions(),
    })
    logger.info("STAIG: %d epochs in %.1f s on %s", result.record["epochs_run"], result.record["train_seconds"],
                chosen_device)
    return adata


def image_features(
    adata,
    *,
    image=None,
    image_scale: float | None = None,
    library_id: str | None = None,
    features=None,
    backbone: str = "auto",
    weights: str | None = None,
    input_px: int | None = None,
    byol_epochs: int = 1,
    batch_size: int = 43,
    patch_factor: float = 3.5,
    border: str = "pad",
    patch_px: int = 512,
    blur1: int = 5,
    blur2: int = 15,
    band: tuple[int, int] | None = None,
    n_components: int = 64,
    random_state: int = 42,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    key_added: str = "X_image",
):
    """H&E image features of each spot, as STAIG uses them, into ``obsm[key_added]`` (spots × ``n_components``).

    A square patch of ``patch_factor`` fiducial diameters around each spot is cut from the best image available
    (``image`` if given, else full-res, hires or lowres from ``uns['spatial']``, with its scale factor), resized
    to ``patch_px``, filtered as published (grey, ``blur1`` Gaussian, box ``band`` of the centred spectrum,
    modulus of the inverse, ``blur2`` Gaussian), resized to ``input_px`` and embedded by a ResNet trained with
    BYOL for ``byol_epochs``; the embedding is z-scored and reduced by PCA. A list (or dict) of slices is
    processed slice by slice: each uses its own image and PCA.

    Parameters
    ----------
    image, image_scale
        A tissue image (array or file) and its pixels per unit of ``obsm['spatial']`` (1 = full resolution).
    library_id
        Which ``uns['spatial']`` entry to use when there are several.
    features
        Your own per-spot image features (array, or an ``obsm`` key): only the z-score and PCA are applied.
    backbone, weights
        ``'resnet18'``, ``'resnet34'``, ``'resnet50'`` (published) or ``'auto'`` (ResNet-50 on a GPU, ResNet-18
        on CPU); ``weights`` a torchvision-layout ImageNet state dict file. Without it the backbone starts
        from random weights (with a warning).
    input_px
        Side of the backbone's input: 256 (published; the default on a GPU) or 128 on CPU, which loses nothing
        of the filtered patch (its spectrum stops at about 19 cycles per side) and is four times faster.
    patch_factor, border
        Patch side in fiducial diameters (3.5); ``'pad'`` fills parts outside the image with white,
        ``'truncate'`` (published) cuts the patch at the edge.
    n_components, random_state
        PCA components (64) and the seed of BYOL, its augmentations and the PCA.
    overwrite
        Recompute even when ``obsm[key_added]`` already holds features made with the same settings.

    Returns
    -------
    The AnnData (or the list of slices), with the features in ``obsm[key_added]`` and the run's settings,
    BYOL losses and timings in ``uns['spatialdomains']['image_features']``.
    """
    if _is_slice_collection(adata):
        slices = list(adata.values()) if isinstance(adata, dict) else list(adata)
        for one in slices:
            image_features(one, features=features, backbone=backbone, weights=weights, input_px=input_px,
                           byol_epochs=byol_epochs, batch_size=batch_size, patch_factor=patch_factor,
                           border=border, patch_px=patch_px, blur1=blur1, blur2=blur2, band=band,
                           n_components=n_components, random_state=random_state, device=device,
                           overwrite=overwrite, progress=progress, key_added=key_added)
        return adata
    from .image import features as _features
    from .image.filters import FilterSettings
    from .models.trainer import select_device

    coordinates = _io.spatial_coordinates(adata)
    if features is not None:
        if isinstance(features, str) and features not in adata.obsm:
            raise InputError(f"features: obsm['{features}'] does not exist (obsm keys: {', '.join(adata.obsm)})")
        given = adata.obsm[features] if isinstance(features, str) else features
        if len(given) != adata.n_obs:
            raise InputError(f"features have {len(given)} rows for {adata.n_obs} spots")
        reduced, variance = _features.reduce_features(np.asarray(given), n_components, random_state)
        adata.obsm[key_added] = reduced
        _record(adata, "image_features", {"source": features if isinstance(features, str) else "array given",
                                          "n_components": reduced.shape[1], "explained_variance": variance,
                                          "versions": package_versions()})
        return adata
    chosen_device = select_device(device)
    on_gpu = chosen_device.type == "cuda"
    if backbone == "auto":
        backbone = "resnet50" if on_gpu else "resnet18"
    settings = _features.ImageFeatureSettings(
        backbone=backbone, weights=None if weights is None else str(weights),
        input_px=input_px or (256 if on_gpu else 128), byol_epochs=byol_epochs, batch_size=batch_size,
        patch_factor=patch_factor, border=border,
        filter=FilterSettings(patch_px=patch_px, blur1=blur1, blur2=blur2,
                              band=None if band is None else tuple(band)),
        n_components=n_components, random_state=random_state)
    tissue = _features.find_image(adata, image, image_scale, library_id)
    if tissue is None:
        raise InputError("no tissue image: uns['spatial'][library]['images'] is empty and no image= was given; "
                         "pass image= (array or file) and image_scale= (pixels per obsm['spatial'] unit)")
    previous = adata.uns.get(UNS_KEY, {}).get("image_features", {})
    wanted = {"settings": settings.as_record(), "image_sources": [tissue.source]}
    if not overwrite and key_added in adata.obsm and _same_record(previous, wanted):
        logger.info("image features: obsm['%s'] already holds features made with these settings; reusing them "
                    "(overwrite=True recomputes)", key_added)
        return adata
    logger.info("image features: %s, %d-px input, %s image, on %s", backbone, settings.input_px, tissue.source,
                chosen_device)
    (reduced,), record = _features.extract_features([tissue], [coordinates], settings, device=chosen_device,
                                                     progress=progress)
    adata.obsm[key_added] = reduced
    _record(adata, "image_features", {**record, "key_added": key_added, "versions": package_versions()})
    return adata


def spotscape(
    adata,
    *,
    batch_key: str | None = None,
    n_domains: int | None = None,
    n_epochs: int | None = None,
    learning_rate: float | None = None,
    n_top_genes: int | None = None,
    graph: str | None = None,
    radius: float | None = None,
    batch_norm_momentum: float | None = None,
    prototypes: bool | None = None,
    warmup_epochs: int | None = None,
    ss_mode: str | None = None,
    layer: str | None = None,
    random_state: int = 0,
    device: str = "auto",
    deterministic: bool = False,
    progress: bool = True,
    checkpoint: str | None = None,
    key_added: str = "X_spotscape",
) -> ad.AnnData:
    """Learn a Spotscape embedding into ``obsm[key_added]`` and a denoised expression, for one or several slices.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (or ``layers[layer]``) and coordinates in ``obsm['spatial']``; or a list (or dict)
        of such AnnData, one per slice (see ``batch_key``).
    batch_key
        ``obs`` column naming each spot's slice. Several slices are integrated: one graph per slice in its own
        coordinates, the genes highly variable in every slice, similarity-scale matching and (after 500
        epochs) prototypical contrastive learning. A list input is combined into one AnnData (returned), with
        the slice in ``obs[batch_key]`` ('slice' by default), and each input receives its own rows of the results.
    n_domains
        Expected number of domains; sets the prototype counts (n, 1.5n, 2n). Never taken from labels; when not
        given, chosen by silhouette at the end of the warm-up.
    n_epochs, learning_rate
        Training length (1000) and Adam's learning rate (1e-4 for one slice, 5e-4 for several).
    n_top_genes
        seurat_v3 highly variable genes used (5000, per slice).
    graph, radius
        ``'radius'`` (default; radius 1.5 × the median nearest-neighbour distance unless given, at most 50
        neighbours) or ``'knn'`` (6 nearest, for irregular cell-level coordinates).
    batch_norm_momentum
        Momentum of the batch norms (0.1; the published code's 0.99 is available).
    prototypes, warmup_epochs
        Use the prototypical loss (default: with several slices only), from epoch ``warmup_epochs`` (500) on.
    ss_mode
        ``'per_slice'`` (default: the anchor's own slice against each other slice) or ``'pooled'``.
    random_state, deterministic, device, progress, checkpoint
        As in :func:`staig`.
    key_added
        ``obsm`` key of the embedding (64-d encoder output).

    The decoder output (log-normalised scale, over the genes used) goes to ``layers['spotscape_denoised']``
    when the AnnData holds exactly those genes, else to ``obsm['spotscape_denoised']`` with the gene names in
    ``uns['spatialdomains']['spotscape']['denoised_genes']``.
    """
    if _is_slice_collection(adata):
        return _on_combined_slices(spotscape, adata, batch_key, [key_added, "spotscape_denoised"],
                                   n_domains=n_domains, n_epochs=n_epochs, learning_rate=learning_rate,
                                   n_top_genes=n_top_genes, graph=graph, radius=radius,
                                   batch_norm_momentum=batch_norm_momentum, prototypes=prototypes,
                                   warmup_epochs=warmup_epochs, ss_mode=ss_mode,
                                   layer=layer, random_state=random_state, device=device,
                                   deterministic=deterministic, progress=progress, checkpoint=checkpoint,
                                   key_added=key_added)
    from .models import spotscape as model
    from .models.trainer import select_device

    chosen_device = select_device(device)
    timer = Timer()
    with timer("preprocess"):
        checked = _io.check_input(adata, layer=layer, n_neighbors=model.SpotscapeConfig.n_neighbors)
        layout = _layout(adata, batch_key, checked.spots)
        if learning_rate is None and layout.n_slices > 1:
            learning_rate = model.MULTI_SLICE_LEARNING_RATE
        settings = {"n_epochs": n_epochs, "learning_rate": learning_rate, "n_top_genes": n_top_genes,
                    "graph": graph, "radius": radius, "batch_norm_momentum": batch_norm_momentum,
                    "prototypes": prototypes, "warmup_epochs": warmup_epochs, "ss_mode": ss_mode}
        config = model.SpotscapeConfig(**{k: v for k, v in settings.items() if v is not None})
        if layout.n_slices == 1:
            features, genes = _pp.spotscape_features(checked.counts, n_top_genes=config.n_top_genes)
        else:
            features, genes = _pp.multi_slice_features(checked.counts[layout.order], layout.bounds,
                                                       n_top_genes=config.n_top_genes, normalise_over="hvgs",
                                                       slice_names=layout.names)
    with timer("graph"):
        adjacency = _spotscape_graph(checked.coordinates[layout.order], layout, config)
    with timer("train"):
        result = model.train_spotscape(features, adjacency, config, slice_bounds=layout.bounds, n_domains=n_domains,
                                       device=chosen_device, random_state=random_state,
                                       deterministic=deterministic, progress=progress, checkpoint=checkpoint)
    adata.obsm[key_added] = _fill_spots(_unsort(result.embedding, layout), checked.spots)
    gene_names = np.asarray(checked.gene_names[genes], dtype=str)
    denoised = _fill_spots(_unsort(result.denoised, layout), checked.spots)
    record_genes = None
    if len(genes) == adata.n_vars:
        order = np.argsort(genes)  # genes are column indices; here they cover all columns
        adata.layers["spotscape_denoised"] = denoised[:, order]
    else:
        adata.obsm["spotscape_denoised"] = denoised
        record_genes = gene_names
    _record(adata, "spotscape", {
        "parameters": result.record.pop("config"),
        "n_domains": n_domains,
        "random_state": random_state,
        "deterministic": deterministic,
        "layer": layer,
        "key_added": key_added,
        **_slice_record(layout, batch_key),
        "n_spots_used": int(checked.spots.sum()),
        "n_spots_left_out": int((~checked.spots).sum()),
        "genes": gene_names,
        "denoised_genes": record_genes,
        "mean_degree": float(adjacency.nnz / adjacency.shape[0]),
        "training": result.record,
        "timings": timer.seconds,
        "versions": package_versions(),
    })
    logger.info("Spotscape: %d epochs in %.1f s on %s", result.record["epochs_run"], result.record["train_seconds"],
                chosen_device)
    return adata


def spami(
    data,
    *,
    modality_kinds: dict[str, str] | None = None,
    layers: dict[str, str] | None = None,
    n_epochs: int | None = None,
    learning_rate: float | None = None,
    n_neighbors: int | None = None,
    out_dim: int | None = None,
    dgi_weights: tuple[float, ...] | None = None,
    reconstruction_weights: tuple[float, ...] | None = None,
    correspondence_weight: float | None = None,
    n_pcs: int = 50,
    n_top_genes: int = 3000,
    min_cells: int = 10,
    min_spots: int = 0,
    balance: bool = True,
    random_state: int = 0,
    device: str = "auto",
    deterministic: bool = False,
    progress: bool = True,
    checkpoint: str | None = None,
    key_added: str = "X_spami",
):
    """Learn a SpaMI embedding of paired omics measured on the same spots (RNA + protein, RNA + ATAC).

    Parameters
    ----------
    data
        A MuData, or a dict of modality name → AnnData (raw counts in ``X``; coordinates in ``obsm['spatial']``
        of at least one modality, or of the MuData), or one AnnData (a single modality, trained without the
        correspondence term). Spots are matched by name; the first modality with coordinates gives them and the
        others must agree.
    modality_kinds
        What each modality holds ('rna', 'adt' or 'atac') when its name or ``var['feature_types']`` does not say.
    layers
        Modality name → layer holding its raw counts, for modalities whose ``X`` is not raw.
    n_epochs, learning_rate
        Training length (1000) and Adam's learning rate (1e-3).
    n_neighbors
        k of the spatial kNN graph shared by the omics (3); the readout averages each spot and its k nearest.
    out_dim
        Size of the embeddings (64).
    dgi_weights, reconstruction_weights, correspondence_weight
        Loss weights: one DGI and one reconstruction weight per modality, in modality order (1, 1 and 10, 10),
        and the weight of the cosine correspondence between the omics (5).
    n_pcs, n_top_genes, min_cells
        RNA: principal components (50), highly variable genes (3000, scanpy's 'seurat' flavour) and the minimum
        number of spots a gene is detected in (10). ATAC uses ``n_pcs`` LSI components.
    min_spots
        Protein: drop antibodies detected in fewer spots (0 keeps all).
    balance
        Centre each modality's features and scale them to mean variance 1 before training (default; see
        docs/methods.md: without it the RNA reconstruction dominates and the attention collapses onto RNA).
        ``False`` trains on the published scale. Reconstructions are returned on the preprocessed scale either way.
    random_state, deterministic, device, progress, checkpoint
        As in :func:`staig`.
    key_added
        ``obsm`` key of the fused embedding.

    Returns
    -------
    The object holding the results: the MuData given, a new MuData built from a dict, or the AnnData given.
    ``obsm[key_added]`` (fused), ``obsm[key_added + '_<modality>']`` (per omics), ``obsm['spami_attention']``
    (per-spot weight of each modality, columns in ``uns['spatialdomains']['spami']['modalities']`` order),
    ``obsm['spami_recon_<modality>']`` (reconstruction in the preprocessed space) and, for RNA,
    ``obsm['spami_denoised_rna']`` (back-projected to the log-normalised HVGs listed in ``uns``). Spots not in
    every modality, or without counts in one, get NaN rows.
    """
    from . import modalities as _modalities
    from .models import spami as model
    from .models.trainer import select_device

    settings = {"n_epochs": n_epochs, "learning_rate": learning_rate, "n_neighbors": n_neighbors,
                "out_dim": out_dim, "correspondence_weight": correspondence_weight,
                "dgi_weights": None if dgi_weights is None else tuple(dgi_weights),
                "reconstruction_weights": None if reconstruction_weights is None else tuple(reconstruction_weights)}
    config = model.SpamiConfig(**{k: v for k, v in settings.items() if v is not None})
    chosen_device = select_device(device)
    timer = Timer()
    with timer("preprocess"):
        pair = _modalities.pair_modalities(data, modality_kinds=modality_kinds, layers=layers)
        container = _multiomics_container(data)
        if len(pair.names) == 1:
            logger.info("SpaMI with one modality ('%s'): no correspondence term, attention weight 1", pair.names[0])
        features = [_pp.omics_features(counts, kind, n_pcs=n_pcs, n_top_genes=n_top_genes, min_cells=min_cells,
                                       min_spots=min_spots, random_state=random_state)
                    for counts, kind in zip(pair.counts, pair.kinds)]
    with timer("graph"):
        if len(pair.spot_names) <= config.n_neighbors:
            raise InputError(f"{len(pair.spot_names)} spots cannot have {config.n_neighbors} neighbours: lower "
                             "n_neighbors")
        adjacency = _graph.knn_graph(pair.coordinates, config.n_neighbors)
        neighbours = _graph.nearest_other_spots(pair.coordinates, config.n_neighbors)
    with timer("train"):
        inputs = [_pp.balance_scale(f.x) if balance else (f.x, np.zeros(f.x.shape[1], np.float32), 1.0)
                  for f in features]
        result = model.train_spami([x for x, _, _ in inputs], adjacency, neighbours, config, device=chosen_device,
                                   random_state=random_state, deterministic=deterministic, progress=progress,
                                   checkpoint=checkpoint)
        result.reconstructions = [r * scale + centre for r, (_, centre, scale) in zip(result.reconstructions, inputs)]
    rows = container.obs_names.get_indexer(pair.spot_names)
    _store_rows(container, key_added, result.embedding, rows)
    for name, feature, embedding, reconstruction in zip(pair.names, features, result.modality_embeddings,
                                                        result.reconstructions):
        _store_rows(container, f"{key_added}_{name}", embedding, rows)
        _store_rows(container, f"spami_recon_{name}", reconstruction, rows)
        if feature.kind == "rna":
            _store_rows(container, "spami_denoised_rna", reconstruction @ feature.loadings.T + feature.mean, rows)
    _store_rows(container, "spami_attention", result.attention, rows)
    if "spatial" not in container.obsm:
        _store_rows(container, "spatial", pair.coordinates, rows)
    _record(container, "spami", {
        "modalities": np.asarray(pair.names, dtype=str),
        "kinds": np.asarray(pair.kinds, dtype=str),
        "parameters": result.record.pop("config"),
        "preprocessing": {"n_pcs": n_pcs, "n_top_genes": n_top_genes, "min_cells": min_cells, "min_spots": min_spots,
                          "balance": balance, "balance_scales": np.asarray([scale for _, _, scale in inputs])},
        "features": {name: np.asarray(names[f.features], dtype=str)
                     for name, names, f in zip(pair.names, pair.feature_names, features)},
        "input_dims": np.asarray([f.x.shape[1] for f in features]),
        "random_state": random_state,
        "deterministic": deterministic,
        "key_added": key_added,
        "n_spots_used": len(pair.spot_names),
        "n_spots_not_in_every_modality": pair.n_unmatched,
        "n_spots_without_counts": pair.n_empty,
        "n_edges": int(adjacency.nnz // 2),
        "training": result.record,
        "timings": timer.seconds,
        "versions": package_versions(),
    })
    logger.info("SpaMI: %d epochs in %.1f s on %s", result.record["epochs_run"], result.record["train_seconds"],
                chosen_device)
    return container


def baseline(
    data,
    *,
    modality_kinds: dict[str, str] | None = None,
    layers: dict[str, str] | None = None,
    n_pcs: int = 50,
    smoothing_spots: int = 7,
    n_top_genes: int = 3000,
    min_cells: int = 10,
    random_state: int = 0,
    key_added: str = "X_baseline",
):
    """A floor to compare every model against: per modality, PCA of SpaMI's preprocessed features (RNA:
    log-normalised HVGs; protein: CLR; ATAC: its LSI is used as is), each block divided by the square root of its
    total variance so that every modality weighs the same, concatenated, then averaged over each spot and its
    nearest spots (``smoothing_spots`` in all, the spot included). No training.

    ``data`` is anything :func:`spami` takes, including one AnnData (smoothed PCA of one modality). The result
    goes to ``obsm[key_added]`` of the returned object (as in :func:`spami`).
    """
    from . import modalities as _modalities

    if smoothing_spots < 1:
        raise InputError(f"smoothing_spots must be at least 1 (the spot itself), got {smoothing_spots}")
    timer = Timer()
    with timer("embed"):
        pair = _modalities.pair_modalities(data, modality_kinds=modality_kinds, layers=layers)
        container = _multiomics_container(data)
        blocks = []
        for counts, kind in zip(pair.counts, pair.kinds):
            feature = _pp.omics_features(counts, kind, n_pcs=n_pcs, n_top_genes=n_top_genes, min_cells=min_cells,
                                         random_state=random_state)
            scores = feature.x if kind != "adt" else _pp.principal_components(feature.x, n_pcs,
                                                                              random_state=random_state)[0]
            scores = scores - scores.mean(axis=0)
            blocks.append(scores / np.sqrt(max(float((scores ** 2).sum(axis=1).mean()), 1e-12)))
        joined = np.hstack(blocks)
        n_smooth = min(smoothing_spots, len(pair.spot_names))
        if n_smooth > 1:
            neighbours = _graph.nearest_other_spots(pair.coordinates, n_smooth - 1)
            joined = (joined + joined[neighbours].sum(axis=1)) / n_smooth
    rows = container.obs_names.get_indexer(pair.spot_names)
    _store_rows(container, key_added, joined, rows)
    if "spatial" not in container.obsm:
        _store_rows(container, "spatial", pair.coordinates, rows)
    _record(container, "baseline", {
        "modalities": np.asarray(pair.names, dtype=str),
        "kinds": np.asarray(pair.kinds, dtype=str),
        "n_pcs": n_pcs, "smoothing_spots": smoothing_spots, "n_top_genes": n_top_genes, "min_cells": min_cells,
        "random_state": random_state, "key_added": key_added, "n_spots_used": len(pair.spot_names),
        "timings": timer.seconds, "versions": package_versions(),
    })
    return container


def _multiomics_container(data):
    """Where multi-omics results go: the MuData or AnnData given, or a new MuData built from a dict."""
    if isinstance(data, ad.AnnData) or not isinstance(data, dict):
        return data
    import mudata

    # The modalities' own obs columns stay in the modalities (mudata's coming default), copied nowhere.
    with mudata.set_options(pull_on_update=False):
        return mudata.MuData(dict(data))


def _store_rows(container, key: str, values: np.ndarray, rows: np.ndarray) -> None:
    """``obsm[key]`` for every spot of ``container``: ``values`` on ``rows``, NaN elsewhere."""
    full = np.full((container.n_obs, values.shape[1]), np.nan, dtype=np.float32)
    full[rows] = values
    container.obsm[key] = full


def _spotscape_graph(coordinates: np.ndarray, layout: _slices.SliceLayout, config):
    """One graph per slice (radius, at most ``max_neighbors``; or kNN), joined block-diagonally, with a warning
    for each slice whose radius graph is too sparse (irregular coordinates)."""
    codes = layout.codes[layout.order]
    if config.graph == "knn":
        return _graph.multi_slice_graph(coordinates, codes, "knn", n_neighbors=config.n_neighbors)
    adjacency = _graph.multi_slice_graph(coordinates, codes, "radius", radius=config.radius,
                                         max_neighbors=config.max_neighbors)
    degree = np.diff(adjacency.indptr)
    for name, (start, end) in zip(layout.names, layout.bounds):
        part = degree[start:end]
        if part.mean() < 3 or np.mean(part == 0) > 0.05:
            where = f" in slice {name}" if layout.n_slices > 1 else ""
            logger.warning("the radius graph is sparse%s (mean degree %.1f, %.1f%% isolated spots); for "
                           "irregular coordinates such as cell centroids use graph='knn'", where, part.mean(),
                           100 * np.mean(part == 0))
    return adjacency


def cluster(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_staig",
    n_domains: int | None = None,
    method: str = "auto",
    refine: str | bool = "auto",
    batch_key: str | None = None,
    n_domains_range: tuple[int, int] = (2, 15),
    refine_neighbors: int = 15,
    random_state: int = _cluster.MCLUST_SEED,
    key_added: str = "domain",
) -> ad.AnnData:
    """Cluster ``obsm[use_rep]`` into domains, stored as a categorical ``obs[key_added]`` ('1'..'K').

    ``method``: 'auto' (mclust EEE when R has it, else the tied Gaussian mixture), 'mclust', 'gmm', 'kmeans'
    or 'leiden'. ``n_domains=None`` picks the number in ``n_domains_range`` with the highest silhouette.
    ``refine``: majority vote over the ``refine_neighbors`` nearest spots; 'auto' refines regular lattices
    (Visium, ST) only. When refined, the raw clustering is kept in ``obs[key_added + '_unrefined']``.
    With several slices (``batch_key``), all spots are clustered together, so a domain means the same in every
    slice, and refinement looks for neighbours within each spot's own slice.
    """
    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first (e.g. sd.tl.staig(adata)) "
                         "or name an existing embedding with use_rep")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    has_embedding = np.all(np.isfinite(embedding), axis=1)
    coordinates = _io.spatial_coordinates(adata)[has_embedding]
    layout = _layout(adata, batch_key, has_embedding)
    started = time.perf_counter()
    if n_domains is None:
        low, high = n_domains_range
        result, _ = _cluster.choose_n_domains(embedding[has_embedding], range(low, high + 1), method,
                                              random_state=random_state)
        chosen_by = "silhouette"
    else:
        result = _cluster.cluster_embedding(embedding[has_embedding], n_domains, method, random_state=random_state)
        chosen_by = "user"
    slice_rows = [np.flatnonzero(layout.codes == q) for q in range(layout.n_slices)]
    if refine == "auto":
        refine = all(_graph.is_lattice(coordinates[rows]) for rows in slice_rows)
    labels = result.labels + 1
    if refine:
        adata.obs[f"{key_added}_unrefined"] = _domain_column(labels, has_embedding)
        refined = labels.copy()
        for rows in slice_rows:
            refined[rows] = _cluster.refine_labels(labels[rows], coordinates[rows], refine_neighbors)
        labels = refined
    elif f"{key_added}_unrefined" in adata.obs:  # left from an earlier, refined run: no longer true
        del adata.obs[f"{key_added}_unrefined"]
    adata.obs[key_added] = _domain_column(labels, has_embedding)
    _record(adata, "cluster", {
        "use_rep": use_rep,
        "backend": result.backend,
        "n_domains": result.n_domains,
        "n_domains_chosen_by": chosen_by,
        "details": result.details,
        "refined": bool(refine),
        "refine_neighbors": refine_neighbors if refine else None,
        "batch_key": batch_key,
        "random_state": random_state,
        "key_added": key_added,
        "timings": {"cluster": time.perf_counter() - started},
    })
    return adata


def leiden(
    adata,
    *,
    use_rep: str = "X_spami",
    resolution: float = _cluster.PUBLISHED_LEIDEN_RESOLUTIONS["simulation"],
    n_pcs: int | None = 20,
    n_neighbors: int = 50,
    random_state: int = 0,
    key_added: str = "domain",
):
    """Domains by SpaMI's published protocol, for reproducing its numbers: PCA of ``obsm[use_rep]`` to ``n_pcs``,
    a 50-neighbour graph, Leiden at a hand-tuned ``resolution`` (0.4 for the simulations; MISAR-seq 1.0, P22
    1.18, thymus 0.55 with ``n_pcs=None`` for MISAR). The number of domains is not fixed; for a given number use
    :func:`cluster`. Works on an AnnData or a MuData; stores ``obs[key_added]`` and a record.
    """
    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first (e.g. sd.tl.spami(mdata))")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    has_embedding = np.all(np.isfinite(embedding), axis=1)
    started = time.perf_counter()
    labels = _cluster.published_leiden(embedding[has_embedding], resolution, n_pcs=n_pcs, n_neighbors=n_neighbors,
                                       random_state=random_state)
    if f"{key_added}_unrefined" in adata.obs:
        del adata.obs[f"{key_added}_unrefined"]
    adata.obs[key_added] = _domain_column(labels + 1, has_embedding)
    _record(adata, "cluster", {
        "use_rep": use_rep, "backend": "leiden (published protocol)", "n_domains": int(len(np.unique(labels))),
        "n_domains_chosen_by": "resolution", "details": {"resolution": resolution, "n_pcs": n_pcs,
                                                         "n_neighbors": n_neighbors},
        "refined": False, "random_state": random_state, "key_added": key_added,
        "timings": {"cluster": time.perf_counter() - started},
    })
    return adata


def find_domains(
    adata,
    method: str = "staig",
    n_domains: int | None = None,
    *,
    batch_key: str | None = None,
    cluster_method: str = "auto",
    refine: str | bool = "auto",
    random_state: int = 0,
    device: str = "auto",
    progress: bool = True,
    key_added: str = "domain",
    **method_params,
) -> ad.AnnData:
    """One call from raw counts to domains: train ``method``, then cluster its embedding.

    ``method``: 'staig' or 'spotscape' (gene expression, one or several slices), 'spami' (paired omics on one
    section: a MuData or a dict of modality name → AnnData; see :func:`spami`) or 'baseline' (smoothed PCA of
    every modality, no training: a floor to compare against). For the paired-omics methods the object holding
    the results is returned (a new MuData when a dict was given), and ``refine='auto'`` does not refine (SpaMI's
    protocol clusters the embedding as it is); the baseline's ``cluster_method='auto'`` is k-means.

    ``adata`` is one AnnData, or a list (or dict) of AnnData, one per slice, which are integrated: the combined
    AnnData is returned (slice in ``obs[batch_key]``, 'slice' by default) and each slice receives its own
    embedding rows and domains. One AnnData holding several slices names them with ``batch_key``.
    ``method_params`` go to the model (e.g. ``n_epochs``, ``tau``, ``preset``; see :func:`staig`). The
    embedding lands in ``obsm['X_<method>']``, the domains in ``obs[key_added]``, provenance in
    ``uns['spatialdomains']``.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got '{method}'")
    if method in MULTIOMICS_METHODS:
        if batch_key is not None or isinstance(adata, (list, tuple)):
            raise InputError(f"method '{method}' handles one section (its modalities in a MuData or a dict); "
                             "for several slices use method='staig' or 'spotscape'")
        started = time.perf_counter()
        model = {"spami": spami, "baseline": baseline}[method]
        if method == "spami":
            method_params.update(device=device, progress=progress)
        container = model(adata, random_state=random_state, **method_params)
        # SpaMI's protocol does not smooth the domains afterwards: 'auto' means no refinement here. The baseline
        # is defined with k-means (a Gaussian mixture degenerates on its smoothed, nearly collinear components).
        if method == "baseline" and cluster_method == "auto":
            cluster_method = "kmeans"
        cluster(container, use_rep=f"X_{method}", n_domains=n_domains, method=cluster_method,
                refine=False if refine == "auto" else refine, key_added=key_added)
        container.uns[UNS_KEY]["method"] = method
        container.uns[UNS_KEY]["total_seconds"] = time.perf_counter() - started
        return container
    if _is_slice_collection(adata):
        obsm_keys = [f"X_{method}", f"X_{method}_encoder", "spotscape_denoised"]
        return _on_combined_slices(find_domains, adata, batch_key, obsm_keys,
                                   obs_keys=[key_added, f"{key_added}_unrefined"], method=method,
                                   n_domains=n_domains, cluster_method=cluster_method, refine=refine,
                                   random_state=random_state, device=device, progress=progress,
                                   key_added=key_added, **method_params)
    started = time.perf_counter()
    if method == "spotscape":
        method_params.setdefault("n_domains", n_domains)
    model = {"staig": staig, "spotscape": spotscape}[method]
    model(adata, batch_key=batch_key, random_state=random_state, device=device, progress=progress, **method_params)
    cluster(adata, use_rep=f"X_{method}", n_domains=n_domains, method=cluster_method, refine=refine,
            batch_key=batch_key, key_added=key_added)
    adata.uns[UNS_KEY]["method"] = method
    adata.uns[UNS_KEY]["total_seconds"] = time.perf_counter() - started
    return adata


def umap(adata: ad.AnnData, *, use_rep: str = "X_staig", n_neighbors: int = 15, min_dist: float = 0.5,
         random_state: int = 0, key_added: str = "X_umap") -> ad.AnnData:
    """2-d UMAP of ``obsm[use_rep]`` into ``obsm[key_added]`` (spots without an embedding get NaN), seeded."""
    from umap import UMAP

    if use_rep not in adata.obsm:
        raise InputError(f"obsm['{use_rep}'] does not exist: run a model first or name an embedding with use_rep")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    has_embedding = np.all(np.isfinite(embedding), axis=1)
    reducer = UMAP(n_neighbors=min(n_neighbors, int(has_embedding.sum()) - 1), min_dist=min_dist,
                   random_state=random_state)
    adata.obsm[key_added] = _fill_spots(reducer.fit_transform(embedding[has_embedding]), has_embedding)
    return adata


#: Highly variable genes selected per slice before intersecting, for STAIG integration (the method note's 5000).
MULTI_SLICE_TOP_GENES = 5000


def _is_slice_collection(data) -> bool:
    return isinstance(data, (list, tuple, dict))


def _on_combined_slices(tool, slices, batch_key, obsm_keys, obs_keys=(), **params) -> ad.AnnData:
    """Run ``tool`` on the slices combined into one AnnData; hand each slice its rows; return the combined."""
    batch_key = batch_key or _slices.DEFAULT_BATCH_KEY
    combined = _slices.combine(slices, batch_key)
    tool(combined, batch_key=batch_key, **params)
    _slices.hand_back(combined, slices, batch_key, obsm_keys=obsm_keys, obs_keys=obs_keys, uns_key=UNS_KEY)
    return combined


def _layout(adata: ad.AnnData, batch_key: str | None, spots: np.ndarray) -> _slices.SliceLayout:
    """Slices of the spots used (all in one slice without a ``batch_key``)."""
    if batch_key is None:
        return _slices.slice_layout(np.zeros(int(spots.sum()), dtype=int))
    return _slices.slice_layout(_slices.batch_labels(adata, batch_key).to_numpy()[spots])


def _unsort(values: np.ndarray, layout: _slices.SliceLayout) -> np.ndarray:
    """Rows in slice order back to the input order."""
    restored = np.empty_like(values)
    restored[layout.order] = values
    return restored


def _slice_record(layout: _slices.SliceLayout, batch_key: str | None) -> dict:
    if batch_key is None:
        return {}
    return {"batch_key": batch_key, "slices": np.asarray(layout.names, dtype=str),
            "n_spots_per_slice": np.asarray([end - start for start, end in layout.bounds])}


def _library_size(adata: ad.AnnData, key: str | None, spots: np.ndarray) -> np.ndarray | None:
    if key is None:
        return None
    if key not in adata.obs:
        raise InputError(f"library_size_key: obs['{key}'] does not exist (obs columns: {', '.join(adata.obs)})")
    values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=np.float64)[spots]
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"obs['{key}'] must hold a positive total count for every spot with counts")
    return values


def _fill_spots(values: np.ndarray, spots: np.ndarray) -> np.ndarray:
    """Rows for all spots of the input; spots left out get NaN."""
    full = np.full((len(spots), values.shape[1]), np.nan, dtype=np.float32)
    full[spots] = values
    return full


def _domain_column(labels: np.ndarray, has_embedding: np.ndarray) -> pd.Categorical:
    column = np.full(len(has_embedding), None, dtype=object)
    column[has_embedding] = np.asarray(labels).astype(str)
    categories = [str(k) for k in sorted(np.unique(np.asarray(labels)))]
    return pd.Categorical(column, categories=categories)


def _record(adata: ad.AnnData, step: str, record: dict) -> None:
    adata.uns.setdefault(UNS_KEY, {})
    adata.uns[UNS_KEY][step] = h5ad_safe(record)


def _image_features_ready(adata, image_key: str, image_options: dict | None, progress: bool,
                          batch_key: str | None = None) -> bool:
    """True when ``obsm[image_key]`` holds image features, computing them from the AnnData's image if needed;
    False (after a logged warning) when there is no image to compute them from."""
    if image_key in adata.obsm:
        return True
    if batch_key is not None:
        logger.warning("STAIG: use_image=True but obsm['%s'] is missing on the combined slices; running from gene "
                       "expression only. Compute image features per slice (sd.tl.image_features on each) "
                       "or pass the slices as a list", image_key)
        return False
    from .image.features import find_image

    options = dict(image_options or {})
    if find_image(adata, options.get("image"), options.get("image_scale"), options.get("library_id")) is None:
        logger.warning("STAIG: use_image=True but the input has no tissue image (uns['spatial'] holds none and "
                       "no image was given); running from gene expression only. Pass image_options="
                       "{'image': ..., 'image_scale': ...} to use one")
        return False
    image_features(adata, progress=progress, key_added=image_key, **options)
    return True


def _same_record(previous: dict, wanted: dict) -> bool:
    """Whether a stored record (possibly read back from h5ad) was made with the wanted settings."""
    return all(json_safe(previous.get(key)) == json_safe(h5ad_safe(value)) for key, value in wanted.items())
