"""What one report computes, as one frozen object: :class:`ReportRequest`.

Every door builds it the same way, with :meth:`ReportRequest.build` from flat options (the command line's flags,
a samplesheet row's columns, Python keywords, R's arguments through the bridge), checks it once, as it is built,
before any work, and hands it whole to the report's notebook and to :func:`spatialdomains.report.sample.analyse`.
A method's own settings (``preset``, ``n_epochs``, ``tau``, ...) travel together in ``model_options``, checked
by the method named. Adding a report option is one field here, the step that uses it, and its command-line flag;
the samplesheet column, R's argument and the batch's record of parameters follow from the field.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, option

#: The report's name for reporting the domains already in the input, beside the registered methods.
PRECOMPUTED = "precomputed"
#: Where the domains are in the input (precomputed) and where found domains go.
DOMAIN_KEY = "domain"
#: Friendly names of method settings, as the command line and the samplesheet spell them.
ALIASES = {"epochs": "n_epochs"}
#: Run options a report passes to the method with its settings (the others are request fields: seed, device, ...).
RUN_SETTINGS = ("preset", "training", "batch_size", "deterministic")
#: Metadata of fields that say how a report runs, not what it computes: left out of a batch's fingerprint.
HOW = {"how": True}
#: Metadata of fields that name a file (read relative to a samplesheet's folder).
PATH = {"path": True}


def report_methods() -> list[str]:
    """The methods a report can run: every registered one, and 'precomputed'."""
    from .. import methods

    return [*methods.names(), PRECOMPUTED]


class RequestError(InputError):
    """Every problem of a report's options at once (``problems``), so a samplesheet lists them together."""

    def __init__(self, problems: list[str]) -> None:
        message = problems[0] if len(problems) == 1 else (f"{len(problems)} problems with the report's options:\n  - "
                                                          + "\n  - ".join(problems))
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class ReportRequest:
    """One report's inputs and options. Build it with :meth:`build`; it is checked when built.

    inputs
        One input file or folder, or several slices to integrate.
    sample
        The name shown in the report (None: the first input's file name).
    method
        A registered method (:func:`spatialdomains.methods.names`), or 'precomputed' to report the domains in
        ``obs['domain']``.
    modalities
        Name → path of further omics of the same section, for methods of kind 'omics'.
    n_domains, cluster_method, refine
        The number of domains (None: chosen from the data), the clustering backend and the majority-vote refinement
        ('auto': the method's choice), as in :func:`spatialdomains.tl.find_domains`.
    seed
        Seeds training, clustering, UMAP and every sampled step.
    model_options
        The method's own settings (its config fields, ``preset``, ``training``, ``batch_size``).
    species, key_type, ontology, gene_sets, engine
        GO enrichment (see :func:`spatialdomains.analysis.enrich_go`).
    min_log2fc, max_pvalue, pvalue
        Which marker genes count as significant (see :func:`spatialdomains.analysis.markers`).
    n_markers
        How many top marker genes of each domain the summary, dot plot and heatmap show.
    table, coordinate_system
        For a SpatialData store: the table to read and the frame of its positions (None: chosen from the store,
        see :func:`spatialdomains.io.read_spatialdata`).
    image, image_scale
        A tissue picture to draw the domains on, at ``image_scale`` pixels per coordinate unit.
    label_key
        An ``obs`` column annotating the spots, compared with the domains (and transferred between slices).
    condition_key
        With several slices, an ``obs`` column giving each slice's condition, compared within each domain.
    device, threads, progress
        How it runs: the torch device, CPU threads (None: the free cores), progress on the terminal.
    """

    inputs: tuple[str, ...]
    sample: str | None = None
    method: str = "staig"
    modalities: Mapping[str, str] = field(default_factory=dict)
    n_domains: int | None = None
    cluster_method: str = "auto"
    refine: str | bool = "auto"
    seed: int = 0
    model_options: Mapping[str, Any] = field(default_factory=dict)
    species: str = "auto"
    key_type: str = "auto"
    ontology: str = "BP"
    gene_sets: str | None = field(default=None, metadata=PATH)
    engine: str = "auto"
    min_log2fc: float = 0.25
    max_pvalue: float = 0.05
    pvalue: str = "adjusted"
    n_markers: int = 5
    table: str | None = None
    coordinate_system: str | None = None
    image: str | None = field(default=None, metadata=PATH)
    image_scale: float = 1.0
    label_key: str | None = None
    condition_key: str | None = None
    device: str = field(default="auto", metadata=HOW)
    threads: int | None = field(default=None, metadata=HOW)
    progress: bool = field(default=False, metadata=HOW)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise RequestError(problems)

    # --- building ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, inputs, **options) -> "ReportRequest":
        """A checked request from flat options: the request's fields, and the method's settings by name (e.g.
        ``preset='cells'``, ``epochs=50``, ``tau=5``), which go into ``model_options``. Options given as None take
        their default (as R's NULL does)."""
        paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs or [])
        fields, settings = {}, dict(options.pop("model_options", None) or {})
        for name, value in options.items():
            if value is None:
                continue
            if name in _FIELDS:
                fields[name] = value
            else:
                settings[ALIASES.get(name, name)] = value
        return cls(inputs=tuple(str(p) for p in paths), **_normalised(fields), model_options=settings)

    @classmethod
    def from_dict(cls, values: Mapping) -> "ReportRequest":
        """The request :meth:`as_dict` wrote (the report's notebook receives it so)."""
        return cls(**{**values, "inputs": tuple(values["inputs"])})

    def as_dict(self) -> dict:
        """Plain values (JSON), every field."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def fingerprint_parameters(self) -> dict:
        """What decides the results (every field but how it runs), for a batch's record of each sample."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if not f.metadata.get("how")}

    # --- what the steps need ---------------------------------------------------------------------------------
    @property
    def finds_domains(self) -> bool:
        return self.method != PRECOMPUTED

    def method_spec(self):
        """The registered method (None for 'precomputed')."""
        from .. import methods

        return methods.get(self.method) if self.finds_domains else None

    def domain_options(self) -> dict:
        """Keyword arguments of :func:`spatialdomains.tl.find_domains` besides the data and method."""
        options = dict(self.model_options)
        if self.threads:
            options["n_threads"] = int(self.threads)
        return {"n_domains": self.n_domains, "cluster_method": self.cluster_method, "refine": self.refine,
                "random_state": self.seed, "device": self.device, "progress": self.progress,
                "key_added": DOMAIN_KEY, **options}

    def paths(self) -> list[str]:
        """Every file or folder the report reads."""
        return [*self.inputs, *self.modalities.values(), *(p for p in (self.image, self.gene_sets) if p)]

    def sample_name(self) -> str:
        from ..slices import slice_names

        return self.sample or slice_names(list(self.inputs[:1]))[0]


_FIELDS = {f.name for f in dataclasses.fields(ReportRequest)} - {"inputs", "model_options"}


def request_fields() -> list[dataclasses.Field]:
    """The request's fields other than ``inputs``, ``modalities`` and ``model_options`` (the samplesheet's columns and
    R's arguments come from these)."""
    return [f for f in dataclasses.fields(ReportRequest) if f.name in _FIELDS - {"modalities"}]


def field_type(name: str, holder: type = None) -> type | None:
    """The plain type of a dataclass field (``int`` for ``int | None``; ``str`` when it is not one plain type), for
    parsing a samplesheet's text; None when ``holder`` (default: the request) has no such field."""
    hints = typing.get_type_hints(holder or ReportRequest)
    if name not in hints:
        return None
    kinds = [t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, bool, str) else str


def _normalised(fields: dict) -> dict:
    """Paths as strings, whole numbers as integers where the field is one."""
    for name in ("gene_sets", "image"):
        if isinstance(fields.get(name), os.PathLike):
            fields[name] = str(fields[name])
    if "modalities" in fields:
        fields["modalities"] = {str(k): str(v) for k, v in dict(fields["modalities"]).items()}
    for name, value in fields.items():  # R sends whole numbers as doubles
        if isinstance(value, float) and value.is_integer() and field_type(name) is int:
            fields[name] = int(value)
    return fields


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _problems(request: ReportRequest) -> list[str]:
    """Every problem of a request, in the words of the interface in use."""
    problems = []
    _check(problems, _inputs_problems, request)
    _check(problems, _method_problems, request)
    _check(problems, _clustering_problems, request)
    _check(problems, _analysis_problems, request)
    return problems


def _check(problems: list, check, request) -> None:
    try:
        problems.extend(check(request))
    except InputError as error:  # a check that stops at its first problem
        problems.extend(getattr(error, "problems", [str(error)]))


def _inputs_problems(request: ReportRequest) -> list[str]:
    from ..io import store_option_problems

    problems = []
    if not request.inputs:
        problems.append(f"{option('inputs')}: give at least one input file or folder")
    for name, path in [*((option("inputs"), p) for p in request.inputs),
                       *((f"{option('modalities')} '{m}'", p) for m, p in request.modalities.items()),
                       (option("image"), request.image), (option("gene_sets"), request.gene_sets)]:
        if path is not None and not Path(path).exists():
            problems.append(f"{name} '{path}' does not exist")
    problems.extend(store_option_problems(request.inputs, request.table, request.coordinate_system))
    if request.image_scale is None or not request.image_scale > 0:
        problems.append(f"{option('image_scale', request.image_scale)} must be a positive number")
    if request.condition_key is not None and len(request.inputs) < 2:
        problems.append(f"{option('condition_key', request.condition_key)} compares slices: give several inputs, "
                        f"each with obs['{request.condition_key}'] naming its condition")
    return problems


def _method_problems(request: ReportRequest) -> list[str]:
    from .. import methods

    if request.method not in report_methods():
        return [f"{option('method', request.method)} is not one of {', '.join(report_methods())}"]
    several = len(request.inputs) > 1
    if not request.finds_domains:
        given = [option(name) for name in request.model_options] + [option("refine")] * (request.refine != "auto")
        problems = [f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to "
                    f"{option('method', PRECOMPUTED)}, which reports the domains given in the input; leave "
                    f"{'it' if len(given) == 1 else 'them'} out, or name a method to find the domains"] if given else []
        if several or request.modalities:
            problems.append(f"{option('method', PRECOMPUTED)} takes one input (already combined)")
        return problems
    spec = methods.get(request.method)
    problems = methods.setting_problems(spec, request.model_options, extra=RUN_SETTINGS)
    if spec.kind == "omics":
        if several:
            problems.append(f"{option('method', spec.name)} takes one section: one input (an .h5mu, or the RNA file "
                            f"with the other omics as {option('modalities')}), not {len(request.inputs)}")
        h5mu = len(request.inputs) == 1 and request.inputs[0].lower().endswith(".h5mu")
        if h5mu and request.modalities:
            problems.append(f"an .h5mu input already holds its modalities; leave {option('modalities')} out")
        if not h5mu and 1 + len(request.modalities) < spec.min_modalities:
            problems.append(f"{option('method', spec.name)} needs a second omics: give it as "
                            f"{option('modalities')}, or one .h5mu input")
    elif request.modalities:
        omics = ", ".join(methods.names("omics"))
        problems.append(f"{option('modalities')} apply to the paired-omics methods ({omics}), not "
                        f"{option('method', spec.name)}")
    return problems


def _clustering_problems(request: ReportRequest) -> list[str]:
    from ..domains import check_cluster_options

    check_cluster_options(request.cluster_method, request.refine, request.n_domains)
    seed = request.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        return [f"{option('seed', seed)}: give a whole number of at least 0"]
    return []


def _analysis_problems(request: ReportRequest) -> list[str]:
    from ..analysis.annotation import ORG_PACKAGES
    from ..analysis.markers import PVALUES

    problems = []
    if request.pvalue not in PVALUES:
        problems.append(f"{option('pvalue', request.pvalue)} is not one of {', '.join(PVALUES)}")
    if not 0 < request.max_pvalue <= 1:
        problems.append(f"{option('max_pvalue', request.max_pvalue)} must be in (0, 1]")
    if isinstance(request.n_markers, bool) or not isinstance(request.n_markers, int) or request.n_markers < 1:
        problems.append(f"{option('n_markers', request.n_markers)}: show at least 1 marker gene per domain")
    if request.gene_sets is None and request.species not in ("auto", *ORG_PACKAGES):
        problems.append(f"{option('species', request.species)} is not one of auto, {', '.join(ORG_PACKAGES)} (or "
                        f"give {option('gene_sets')}, a GMT file, for any species)")
    threads = request.threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        problems.append(f"{option('threads', threads)}: give a whole number of at least 1")
    return problems
