"""The one path every method takes, from every door (Python, command line, R, report):

check the options → per-slice steps → combine slices → check input, features, graph → train → store →
hand results back to each slice → record provenance; and, in :func:`find_domains`, cluster.
"""
from __future__ import annotations

import dataclasses
import logging
import time

from . import methods as _methods
from . import slices as _slices
from ._utils import Timer, package_versions
from .errors import InputError
from .methods.base import RUN_OPTIONS, Method, RunConfig
from ._record import UNS_KEY, record_step

logger = logging.getLogger("spatialdomains")


def configure(method: str | Method, data, *, config=None, **options):
    """The method, its config and the run options for ``data``: every option checked, no work done.

    Options given as None mean "the default" (as R's NULL does), so they are dropped here.
    """
    method = method if isinstance(method, Method) else _methods.get(method)
    options = {k: v for k, v in options.items() if v is not None}
    run = RunConfig(**{k: v for k, v in options.items() if k in RUN_OPTIONS})
    overrides = {k: v for k, v in options.items() if k not in RUN_OPTIONS}
    if method.kind == "omics" and is_slice_collection(data) and not isinstance(data, dict):
        raise InputError(f"method '{method.name}' handles one section (its modalities in a MuData or a dict); "
                         "for several slices use method='staig' or 'spotscape'")
    settings = method.resolve(data, method.configure(data, run.preset, overrides, config))
    return method, settings, run


def run_method(method: str | Method, data, *, config=None, **options):
    """Train ``method`` on ``data`` and store its results; return the object holding them.

    ``data`` is one AnnData, a list (or dict) of AnnData (one per slice: combined, trained together, and each
    slice handed its own rows; the combined AnnData is returned), or, for paired-omics methods, a MuData or a
    dict of modality → AnnData. ``options`` are the method's config fields and :class:`RunConfig` fields.
    """
    method, settings, run = configure(method, data, config=config, **options)
    return _run_configured(method, settings, run, data)


def _run_configured(method: Method, settings, run: RunConfig, data):
    device = _device(method, run)  # a wrong device name fails here, before any work
    if method.kind == "omics":
        return _run_one(method, settings, run, data, device)
    if is_slice_collection(data):
        slices = list(data.values()) if isinstance(data, dict) else list(data)
        method.prepare_slices(slices, settings, run)
        run = dataclasses.replace(run, batch_key=run.batch_key or _slices.DEFAULT_BATCH_KEY)
        combined = _slices.combine(data, run.batch_key)
        _run_one(method, settings, run, combined, device)
        _slices.hand_back(combined, data, run.batch_key, obsm_keys=method.handed_back(settings, run),
                          uns_key=UNS_KEY)
        return combined
    method.prepare_slices([data], settings, run)
    return _run_one(method, settings, run, data, device)


def _run_one(method: Method, settings, run: RunConfig, data, device):
    """Inputs → train → store → record, on one object (one AnnData, a combined one, or paired omics)."""
    from .models.trainer import deterministic_kernels

    timer = Timer()
    inputs = method.inputs(data, settings, run, timer)
    with timer("train"), deterministic_kernels(run.deterministic and method.trains):
        result = method.train(inputs, inputs.config, run, device)
    target = inputs.container if method.kind == "omics" else data
    record = method.store(target, inputs, result, inputs.config, run)
    training = getattr(result, "record", None)
    record_step(target, method.name, {
        "parameters": dataclasses.asdict(inputs.config),
        **record,
        "preset": run.preset or method.default_preset(),
        "random_state": run.random_state,
        "deterministic": run.deterministic,
        "key_added": run.key_added or method.default_key,
        "training": {k: v for k, v in (training or {}).items() if k != "config"} or None,
        "timings": timer.seconds,
        "versions": package_versions(),
    })
    if training is not None:
        logger.info("%s: %d epochs in %.1f s on %s", method.title, training["epochs_run"], training["train_seconds"],
                    device)
    return target


def _device(method: Method, run: RunConfig):
    if not method.trains:
        return None
    from .models.trainer import select_device

    return select_device(run.device)


def find_domains(data, method: str = "staig", n_domains: int | None = None, *, cluster_method: str = "auto",
                 refine: str | bool = "auto", key_added: str = "domain", **options):
    """Train ``method``, then cluster its embedding into domains; see :func:`spatialdomains.tl.find_domains`."""
    from .tl.domains import check_cluster_options, cluster

    started = time.perf_counter()
    check_cluster_options(cluster_method, refine, n_domains)
    chosen = _methods.get(method)
    if "n_domains" in chosen.option_names():
        options["n_domains"] = n_domains
    _, settings, run = configure(chosen, data, **options)
    target = _run_configured(chosen, settings, run, data)
    batch_key = (run.batch_key or _slices.DEFAULT_BATCH_KEY) if is_slice_collection(data) and \
        chosen.kind == "expression" else run.batch_key
    record = target.uns[UNS_KEY][chosen.name]
    chosen_by_training = chosen.chosen_n_domains(record) if n_domains is None else None
    cluster(target, use_rep=run.key_added or chosen.default_key, n_domains=n_domains or chosen_by_training,
            method=chosen.cluster_auto if cluster_method == "auto" and chosen.cluster_auto else cluster_method,
            refine=chosen.refine_auto if refine == "auto" and chosen.refine_auto is False else refine,
            batch_key=batch_key if chosen.kind == "expression" else None, random_state=run.random_state,
            key_added=key_added)
    if chosen_by_training is not None:
        target.uns[UNS_KEY]["cluster"]["n_domains_chosen_by"] = f"{chosen.title} (silhouette, shared with training)"
    target.uns[UNS_KEY]["method"] = chosen.name
    target.uns[UNS_KEY]["random_state"] = run.random_state
    target.uns[UNS_KEY]["total_seconds"] = time.perf_counter() - started
    if is_slice_collection(data) and chosen.kind == "expression":
        _slices.hand_back(target, data, batch_key, obs_keys=[key_added, f"{key_added}_unrefined"], uns_key=UNS_KEY)
    return target


def is_slice_collection(data) -> bool:
    return isinstance(data, (list, tuple, dict))

