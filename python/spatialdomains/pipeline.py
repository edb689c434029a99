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
from .errors import InputError, option
from .methods.base import RUN_OPTIONS, Method, RunConfig
from ._record import UNS_KEY, plain_parameters, record_step

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
                         f"for several slices use {option('method', 'staig')} or 'spotscape'")
    if not method.trains:
        given = [name for name in ("checkpoint", "deterministic") if options.get(name)]
        if options.get("device", "auto") != "auto":
            given.append("device")
        if given:
            raise InputError(f"{', '.join(option(name) for name in given)} {'does' if len(given) == 1 else 'do'} not "
                             f"apply to {method.title}, which trains no model")
    if run.training == "minibatch" and not method.minibatch:
        reason = ("its cost per epoch already grows linearly with the spots, so it trains on all of them at once at "
                  "every size" if method.trains else "it trains no model")
        raise InputError(f"{option('training', 'minibatch')} does not apply to {method.title}: {reason}; leave "
                         f"{option('training')} unset")
    settings = method.resolve(data, method.configure(data, run.preset, overrides, config))
    # The record names the preset only when one was applied (a config object is taken as it is).
    run = dataclasses.replace(run, preset=run.preset or (method.default_preset() if config is None else None))
    return method, settings, run


def run_method(method: str | Method, data, *, config=None, **options):
    """Train ``method`` on ``data`` and store its results; return the object holding them.

    ``data`` is one AnnData, a list (or dict) of AnnData (one per slice: combined, trained together, and each
    slice handed its own rows; the combined AnnData is returned), or, for paired-omics methods, a MuData or a
    dict of modality → AnnData. ``options`` are the method's config fields and :class:`RunConfig` fields.
    """
    method, settings, run = configure(method, data, config=config, **options)
    return _run_configured(method, settings, run, data)[0]


def _run_configured(method: Method, settings, run: RunConfig, data):
    """Run a configured method with the CPU threads planned for it; returns the object holding the results and
    the run options used."""
    from .models.trainer import cpu_threads

    device = _device(method, run)  # a wrong device name fails here, before any work
    plan = thread_plan(run, data, method)
    with cpu_threads(plan):
        return _run_steps(method, settings, run, data, device, plan)


def thread_plan(run: RunConfig, data, method: Method):
    """The CPU threads of a run: :attr:`RunConfig.n_threads`, else the free cores, fewer for small samples."""
    from ._utils import running_inside_r
    from .models.trainer import plan_threads

    return plan_threads(run.n_threads, _n_spots(data, method.kind == "omics"), inside_r=running_inside_r())


def _run_steps(method: Method, settings, run: RunConfig, data, device, plan):
    if method.kind == "omics":
        return _run_one(method, settings, run, data, device, plan), run
    if not is_slice_collection(data):
        method.prepare_slices([data], settings, run)
        return _run_one(method, settings, run, data, device, plan), run
    run = dataclasses.replace(run, batch_key=run.batch_key or _slices.DEFAULT_BATCH_KEY)
    _slices.check_combinable(data, run.batch_key)
    method.prepare_slices(_slices.as_list(data), settings, run)
    combined = _slices.combine(data, run.batch_key)
    _run_one(method, settings, run, combined, device, plan)
    _slices.hand_back(combined, data, run.batch_key, obsm_keys=method.handed_back(settings, run), uns_key=UNS_KEY)
    return combined, run


def _run_one(method: Method, settings, run: RunConfig, data, device, plan):
    """Inputs → train → store → record, on one object (one AnnData, a combined one, or paired omics)."""
    from .models.trainer import deterministic_kernels, torch_threads

    timer = Timer()
    inputs = method.inputs(data, settings, run, timer)
    n_spots = _n_spots(data, method.kind == "omics")
    run = dataclasses.replace(run, training=training_mode(method, run, n_spots))
    if method.trains:
        logger.info("%s: training on %d spots %s, on %s with %d CPU thread%s (%s)", method.title, n_spots,
                    "in full batch" if run.training == "full" else f"in mini-batches of {run.batch_size}", device,
                    plan.torch, "" if plan.torch == 1 else "s", plan.reason)
    with timer("train"), deterministic_kernels(run.deterministic and method.trains), torch_threads(plan.torch):
        result = method.train(inputs, inputs.config, run, device)
    target = inputs.container if method.kind == "omics" else data
    record = method.store(target, inputs, result, inputs.config, run)
    training = getattr(result, "record", None)
    record_step(target, method.name, {
        "parameters": plain_parameters(dataclasses.asdict(inputs.config)),
        **record,
        "preset": run.preset,
        "random_state": run.random_state,
        "deterministic": run.deterministic if method.trains else None,
        "key_added": method.embedding_key(run),
        "training": {k: v for k, v in (training or {}).items() if k != "config"} or None,
        "threads": plan.as_dict(),
        "timings": timer.seconds,
        "versions": package_versions(),
    })
    if training is not None:
        logger.info("%s: %d epochs in %.1f s on %s", method.title, training["epochs_run"], training["train_seconds"],
                    device)
    return target


def training_mode(method: Method, run: RunConfig, n_spots: int) -> str:
    """``'full'`` or ``'minibatch'``: what ``run.training`` means for ``method`` on ``n_spots`` spots."""
    from .models.minibatch import choose_training

    return choose_training(run.training, n_spots) if method.minibatch else "full"


def _device(method: Method, run: RunConfig):
    if not method.trains:
        return None
    from .models.trainer import select_device

    return select_device(run.device)


def find_domains(data, method: str = "staig", n_domains: int | None = None, *, cluster_method: str = "auto",
                 refine: str | bool = "auto", choose_by: str = "silhouette", key_added: str = "domain", **options):
    """Train ``method``, then cluster its embedding into domains; see :func:`spatialdomains.tl.find_domains`."""
    from .models.trainer import ThreadPlan, cpu_threads
    from .domains import check_cluster_options, check_domains_fit, cluster

    started = time.perf_counter()
    check_cluster_options(cluster_method, refine, n_domains, choose_by)
    chosen = _methods.get(method)
    if "n_domains" in chosen.option_names() and n_domains is not None:
        options["n_domains"] = n_domains
    _, settings, run = configure(chosen, data, **options)
    check_domains_fit(n_domains or getattr(settings, "n_domains", None), _n_spots(data, chosen.kind == "omics"))
    target, run = _run_configured(chosen, settings, run, data)
    record = target.uns[UNS_KEY][chosen.name]
    plan = ThreadPlan(**record["threads"])  # clustering uses the threads training had
    n_domains = n_domains or getattr(settings, "n_domains", None)
    # Spotscape with prototypes chose a number by silhouette in training; asking for stability overrides it
    chosen_by_training = chosen.chosen_n_domains(record) if n_domains is None and choose_by == "silhouette" else None
    several = is_slice_collection(data) and chosen.kind == "expression"
    with cpu_threads(plan):
        cluster(target, use_rep=chosen.embedding_key(run), n_domains=n_domains or chosen_by_training,
                method=chosen.cluster_auto if cluster_method == "auto" and chosen.cluster_auto else cluster_method,
                refine=chosen.auto_refine if refine == "auto" else refine, batch_key=run.batch_key,
                choose_by=choose_by, random_state=run.random_state, key_added=key_added)
    if chosen_by_training is not None:
        target.uns[UNS_KEY]["cluster"]["n_domains_chosen_by"] = f"{chosen.title} (silhouette, shared with training)"
    target.uns[UNS_KEY]["method"] = chosen.name
    target.uns[UNS_KEY]["random_state"] = run.random_state
    target.uns[UNS_KEY]["total_seconds"] = time.perf_counter() - started
    if several:
        _slices.hand_back(target, data, run.batch_key, obs_keys=[key_added, f"{key_added}_unrefined"], uns_key=UNS_KEY)
    return target


def _n_spots(data, omics: bool) -> int:
    """How many spots the data hold: summed over slices; for paired omics, the fewest of any modality."""
    if is_slice_collection(data):
        counts = [part.n_obs for part in (data.values() if isinstance(data, dict) else data)]
        return min(counts) if omics else sum(counts)
    return int(data.n_obs)


def is_slice_collection(data) -> bool:
    return isinstance(data, (list, tuple, dict))

