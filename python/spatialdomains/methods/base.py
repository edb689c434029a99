"""What a method declares, and the options every run shares.

A method is one module under ``spatialdomains.methods``: a configuration dataclass (with presets) and a
:class:`Method` whose steps the shared pipeline (:mod:`spatialdomains.pipeline`) calls in one order for every
method: configure (checks only) → per-slice steps → inputs (check, slice layout, features, graph) → train →
store. Options reach a method once, as its config; run options (seed, device, ...) as one :class:`RunConfig`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, option


@dataclass(frozen=True)
class RunConfig:
    """How a run happens, the same for every method.

    ``random_state`` seeds Python, NumPy and torch for training and, in :func:`find_domains`, the clustering;
    ``deterministic`` asks torch for deterministic kernels during this run only; ``device`` is ``'auto'``
    (CUDA, then MPS, then CPU) or a torch device name; ``checkpoint`` a path for the trained model;
    ``batch_key`` the ``obs`` column naming each spot's slice; ``key_added`` the ``obsm`` key of the embedding
    (default ``'X_<method>'``); ``preset`` a named bundle of the method's settings (STAIG: ``'paper'``,
    ``'published'`` or ``'cells'``), which the options given override; ``n_threads`` the CPU threads (None: one
    per core that other work leaves free when the run starts, fewer for small samples; the record says what ran);
    ``training`` ``'auto'`` (full batch up to :data:`~spatialdomains.models.minibatch.FULL_BATCH_LIMIT` spots,
    mini-batches above), ``'full'`` or ``'minibatch'`` (the large-data mode, whose epochs grow linearly with the
    spots), with ``batch_size`` anchors per mini-batch step.
    """

    preset: str | None = None
    random_state: int = 0
    device: str = "auto"
    deterministic: bool = False
    progress: bool = True
    checkpoint: str | None = None
    batch_key: str | None = None
    key_added: str | None = None
    n_threads: int | None = None
    training: str = "auto"
    batch_size: int = 2048

    def __post_init__(self) -> None:
        from ..models.minibatch import BatchSettings, choose_training

        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise InputError(f"random_state must be an integer, got {self.random_state!r}")
        choose_training(self.training, 0)  # a wrong name fails here, before any work
        BatchSettings(self.batch_size)


RUN_OPTIONS = frozenset(field.name for field in dataclasses.fields(RunConfig))


class Method:
    """One method's declaration; subclasses fill in the class attributes and the steps.

    What a method can do is declared here, once, and every door reads it from the registry
    (:func:`spatialdomains.methods.capabilities`): the command line's choices, the report, the samplesheet,
    imputation and the R package.

    ``kind`` is ``'expression'`` (one AnnData, or several slices) or ``'omics'`` (paired omics on one section,
    needing at least ``min_modalities`` of them in a report). ``auto_refine`` is what ``refine='auto'`` means for
    its domains (``'auto'``: refine regular lattices; ``False``: never). ``cluster_auto`` replaces
    ``cluster_method='auto'`` when set. ``decodes``: a decoder gives expression back (:meth:`denoised`), for
    :func:`spatialdomains.tl.impute` and the report's denoised markers. ``attention``: the per-spot weight of each
    modality is in ``obsm['<name>_attention']`` (drawn by :func:`spatialdomains.pl.attention`).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    #: Whether the method has the large-data training mode (``training='minibatch'``).
    minibatch: ClassVar[bool] = False
    config_class: ClassVar[type]
    kind: ClassVar[str] = "expression"
    trains: ClassVar[bool] = True
    auto_refine: ClassVar[str | bool] = "auto"
    cluster_auto: ClassVar[str | None] = None
    decodes: ClassVar[bool] = False
    attention: ClassVar[bool] = False
    min_modalities: ClassVar[int] = 1

    def capabilities(self) -> dict:
        """What the method can do, as plain values (for the command line's help and the R package)."""
        return {"name": self.name, "title": self.title, "kind": self.kind, "trains": self.trains,
                "minibatch": self.minibatch, "presets": list(self.preset_names()),
                "default_preset": self.default_preset(), "options": sorted(self.option_names()),
                "cluster_auto": self.cluster_auto, "auto_refine": self.auto_refine, "decodes": self.decodes,
                "attention": self.attention, "min_modalities": self.min_modalities}

    @property
    def default_key(self) -> str:
        return f"X_{self.name}"

    def embedding_key(self, run: RunConfig) -> str:
        """Where the embedding goes: ``run.key_added``, else ``X_<method>``."""
        return run.key_added or self.default_key

    # --- configuration ---------------------------------------------------------------------------------------
    def presets(self, data, overrides: dict) -> dict[str, dict]:
        """Named bundles of settings (they may depend on the data and on other options); ``'default'`` is the
        config's own defaults."""
        return {"default": {}}

    def default_preset(self) -> str:
        return "default"

    def preset_names(self) -> tuple[str, ...]:
        return ("default",)

    def configure(self, data, preset: str | None, overrides: dict, config=None):
        """The run's config: ``config`` (or the preset's) with ``overrides`` applied; all checks, no work."""
        unknown = sorted(set(overrides) - set(self.option_names()))
        if unknown:
            raise InputError(f"unknown {self.title} option(s) {', '.join(unknown)}; {self.title} takes "
                             f"{', '.join(sorted(self.option_names() | RUN_OPTIONS))}")
        if config is not None:
            if not isinstance(config, self.config_class):
                raise InputError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
            if preset is not None:
                raise InputError("give either config or preset, not both")
            return dataclasses.replace(config, **{k: _as_tuple(v) for k, v in overrides.items()})
        presets = self.presets(data, overrides)
        preset = preset or self.default_preset()
        if preset not in presets:
            raise InputError(f"preset must be one of {sorted(presets)}, got '{preset}'")
        settings = {**presets[preset], **overrides}
        return self.config_class(**{k: _as_tuple(v) for k, v in settings.items()})

    @classmethod
    def option_names(cls) -> frozenset[str]:
        return frozenset(field.name for field in dataclasses.fields(cls.config_class))

    def resolve(self, data, config):
        """Settings that depend on the data, fixed before any work (default: the config as it is)."""
        return config

    # --- steps -----------------------------------------------------------------------------------------------
    def prepare_slices(self, slices: list, config, run: RunConfig) -> None:
        """Steps that must see each slice on its own before slices are combined (default: none)."""

    def inputs(self, data, config, run: RunConfig, timer) -> Any:
        """Check the input and build what training needs (features, graph, bookkeeping)."""
        raise NotImplementedError

    def train(self, inputs, config, run: RunConfig, device) -> Any:
        """Train on ``inputs``; return the method's result (with a ``record`` dict)."""
        raise NotImplementedError

    def store(self, target, inputs, result, config, run: RunConfig) -> dict:
        """Write the results into ``target`` and return the method-specific part of its record."""
        raise NotImplementedError

    def handed_back(self, config, run: RunConfig) -> list[str]:
        """``obsm``/``layers`` keys a slice gets back from the combined run."""
        return [self.embedding_key(run)]

    def chosen_n_domains(self, record: dict) -> int | None:
        """A number of domains the training chose itself (used by the clustering when none was given)."""
        return None

    # --- decoder (methods with ``decodes = True``) -----------------------------------------------------------
    def has_denoised(self, holder) -> bool:
        """Whether ``holder`` holds this method's decoder output (it ran there and kept it)."""
        return False

    def denoised(self, holder, modality: str | None):
        """The decoder output in ``holder`` (a :class:`~spatialdomains.methods._decoded.Denoised`), for the
        modality named (None: the method's choice)."""
        raise NotImplementedError(f"{self.title} has no decoder")

    def denoised_not_kept(self, record: dict, modality: str | None) -> str | None:
        """How to get the denoised values that a large run did not keep (None: those asked for were kept)."""
        return (f"train again with fewer genes ({option('n_top_genes')}) or, if memory allows, in full batch "
                f"({option('retrain', True)}, {option('training', 'full')})")


def _as_tuple(value):
    """Lists given for tuple settings (e.g. from R or JSON) become tuples, so configs stay hashable and equal."""
    return tuple(value) if isinstance(value, list) else value


def check_settings(title: str, config, rules: dict) -> None:
    """One error naming every setting that breaks its rule (``name → (ok, rule)``), with the value given, as the
    interface in use spells it (``--epochs 0`` on the command line, ``n_epochs=0`` in Python)."""
    bad = [f"{option(name, getattr(config, name))} (must be {rule})" for name, (ok, rule) in rules.items() if not ok]
    if bad:
        raise InputError(f"invalid {title} setting{'s' if len(bad) > 1 else ''}: {'; '.join(bad)}")
