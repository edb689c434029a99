"""What the report notebook shows, one function per section, so the template stays a list of calls.

Each function displays figures (closed after display, so they are embedded once) and complete HTML tables; tables
get the ``sortable`` class, which the page turns into DataTables tables (search, paging, sort by value, CSV
download). Each numeric cell carries its value in ``data-order``, so numbers and ratios sort as numbers.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .request import PRECOMPUTED
from .result import SampleResult

#: Samples with at most this many spots also get a domain map to zoom, pan and hover (its data travel in the page:
#: about 30 bytes a spot).
INTERACTIVE_MAP_LIMIT = 20_000
#: Tables with at most this many rows (settings, scores) are only sortable: no search box, paging or download.
SMALL_TABLE_ROWS = 15
#: The report's sections, in order: (anchor, title). The page's table of contents and the tests use them.
SECTIONS = [
    ("summary", "Summary"),
    ("overview", "Sample overview and QC"),
    ("domains", "Domains on the tissue"),
    ("umap", "UMAP"),
    ("sizes", "Domain sizes"),
    ("n-domains", "Choosing the number of domains"),
    ("pseudotime", "Pseudotime"),
    ("markers", "Marker genes"),
    ("denoised", "Denoised expression"),
    ("deg-tables", "Differential expression tables"),
    ("volcano", "Volcano plots"),
    ("go", "GO enrichment"),
    ("integration", "Multi-slice integration"),
    ("transfer", "Label transfer between slices"),
    ("conditions", "Conditions compared"),
    ("attention", "SpaMI attention"),
    ("provenance", "Provenance"),
]


def heading(anchor: str) -> None:
    """The section heading with its anchor (titles come from :data:`SECTIONS`)."""
    from IPython.display import HTML, display

    title = dict(SECTIONS)[anchor]
    display(HTML(f'<h2 id="{anchor}" class="report-section">{html.escape(title)}</h2>'))


def show(figure, alt: str | None = None) -> None:
    """Display a matplotlib figure once, as a PNG with alternative text (``alt``, else the figure's titles), and
    free it."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight")
    plt.close(figure)
    display(Image(data=buffer.getvalue()), metadata={"image/png": {"alt": alt or _describe(figure)}})


def _describe(figure) -> str:
    """A figure's titles and axis labels, as alternative text for readers who cannot see it."""
    parts = [figure._suptitle.get_text()] if getattr(figure, "_suptitle", None) else []
    for ax in figure.axes:
        label = ax.get_title() or ax.get_ylabel()
        if label and ax.get_xlabel():
            label = f"{label} by {ax.get_xlabel()}"
        if label:
            parts.append(label)
    return "Figure: " + ("; ".join(dict.fromkeys(parts)) or "a plot of the sample")


def note(text: str) -> None:
    from IPython.display import HTML, display

    display(HTML(f'<p class="report-note">{html.escape(text)}</p>'))


def table(frame: pd.DataFrame, *, caption: str | None = None, max_rows: int | None = None, digits: int = 3) -> None:
    """A sortable HTML table (numbers in scientific notation where small)."""
    from IPython.display import HTML, display

    shown = frame if max_rows is None else frame.head(max_rows)
    display(HTML(table_html(shown, caption=caption, digits=digits)))


_RATIO = re.compile(r"^(\d+)/(\d+)$")


def table_html(frame: pd.DataFrame, *, caption: str | None = None, digits: int = 3) -> str:
    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            if np.isnan(value):
                return '<td data-value="">NA</td>'
            text = f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
            return f'<td data-order="{value!r}">{text}</td>'
        if isinstance(value, _Html):
            return f"<td>{value}</td>"
        if isinstance(value, (bool, np.bool_)):
            return f"<td>{'yes' if value else 'no'}</td>"
        if isinstance(value, (int, np.integer)):
            return f'<td data-order="{int(value)}">{int(value)}</td>'
        ratio = _RATIO.match(str(value))
        if ratio and int(ratio.group(2)):  # GeneRatio, BgRatio: sorted by their value, not as text
            return f'<td data-order="{int(ratio.group(1)) / int(ratio.group(2))!r}">{html.escape(str(value))}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table class="sortable">{title}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


class _Html(str):
    """Table cell content that is already HTML (a colour swatch), written as it is."""


def summary(result: SampleResult, key: str = "domain", n_markers: int | None = None) -> None:
    """What was run and how long it took, the QC headline numbers, and each domain: colour, size, top markers
    and top GO term; with an annotation, how the domains agree with it. ``n_markers``: the request's, by default."""
    from IPython.display import HTML, display

    from .. import methods, pl

    n_markers = n_markers or _requested(result, "n_markers")
    record, adata = result.record, result.adata
    domains = adata.obs[key]
    categories = list(domains.cat.categories)
    seconds = sum(float(v) for v in record.get("timings_seconds", {}).values())
    qc = record["qc"]
    platform = f" ({html.escape(_platform(adata))})" if _platform(adata) else ""
    found = (f"<b>{len(categories)} domains</b> (given in the input) in" if record["method"] == PRECOMPUTED else
             f"{html.escape(_method_title(record))} found <b>{len(categories)} domains</b> in")
    display(HTML(
        f"<p class=\"report-summary\">{found} {adata.n_obs:,} spots × {adata.n_vars:,} genes of "
        f"<b>{html.escape(str(record['sample']))}</b>{platform}, reported in {_duration(seconds)}. Median {qc['median counts']:,.0f} counts "
        f"and {qc['median genes']:,.0f} genes per spot{_mito_text(qc)}.</p>"))
    colours = pl.domain_colours(len(categories))
    sizes = domains.value_counts()
    up = result.markers[result.markers["significant"] & (result.markers["log2fc"] > 0)]
    rows = []
    for colour, domain in zip(colours, categories):
        top = up[up["domain"].astype(str) == str(domain)].sort_values("score", ascending=False).head(n_markers)
        terms = result.go[result.go["domain"].astype(str) == str(domain)] if len(result.go) else result.go
        term = (f"{terms.iloc[0]['Description']} (p.adjust {terms.iloc[0]['p.adjust']:.2g})" if len(terms) else
                ("GO not run" if result.go_error else "no enriched term"))
        rows.append({"": _Html(f'<span class="swatch" style="background:{colour}"></span>'), "domain": str(domain),
                     "spots": int(sizes.get(domain, 0)), "% of spots": round(100 * sizes.get(domain, 0) / adata.n_obs, 1),
                     "top markers": ", ".join(top["symbol"].astype(str)) or "none significant", "top GO term": term})
    table(pd.DataFrame(rows), caption="domains")
    steps = {**record.get("timings_seconds", {})}
    model = record.get("model", {})
    clustering = model.get("cluster", {})
    trained = {}
    if record["method"] != PRECOMPUTED:
        if len(methods.get(record["method"]).preset_names()) > 1:  # a choice was made: say which
            trained["settings preset"] = model.get(record["method"], {}).get("preset")
        trained["refinement"] = (f"majority vote of the {clustering['refine_neighbors']} nearest spots"
                                 if clustering.get("refined") else "none")
    run = {"method": _method_title(record), **trained, "seed": record["seed"],
           "clustering": record.get("clustering_engine") or "given in the input",
           "GO engine": record["enrichment"]["engine"] or "not run",
           "spatialdomains": record.get("versions", {}).get("spatialdomains"),
           **{f"time: {name}": _duration(float(value)) for name, value in steps.items()}}
    table(_rows(run), caption="run")
    if result.label_key:
        annotation(result, key)


def annotation(result: SampleResult, key: str = "domain") -> None:
    """Domains against the user's annotation: agreement scores, the cross-tabulation and both maps."""
    import matplotlib.pyplot as plt

    from .. import pl

    adata, label_key = result.adata, result.label_key
    scores = result.record.get("annotation", {})
    note(f"Compared with obs['{label_key}']: ARI {scores.get('ari', float('nan')):.3f}, "
         f"NMI {scores.get('nmi', float('nan')):.3f} over {scores.get('n_scored', 0):,} annotated spots.")
    labels = adata.obs[label_key].astype(object).where(adata.obs[label_key].notna(), "not annotated").astype(str)
    crosstab = pd.crosstab(adata.obs[key], labels)
    crosstab.insert(0, "domain", crosstab.index.astype(str))
    table(crosstab.reset_index(drop=True), caption=f"spots per domain and {label_key}")
    for name, part in slices_of(result):  # each slice in its own frame
        figure, axes = plt.subplots(1, 2, figsize=(13, 6))
        pl.domains(part, key, ax=axes[0], image=name is None, title=f"{name}: domains" if name else "domains")
        pl.domains(part, label_key, ax=axes[1], image=name is None, title=f"{name}: {label_key}" if name else label_key)
        show(figure, alt=f"Two maps of the tissue side by side: the domains, and the annotation {label_key}"
                         + (f" (slice {name})" if name else ""))


def slices_of(result: SampleResult):
    """(slice name, its spots) for each slice of a multi-slice run; (None, all spots) for one slice."""
    from ..slices import split

    return split(result.adata, result.batch_key) if result.batch_key else [(None, result.adata)]


def _requested(result: SampleResult, name: str):
    """An option of the request that made the result (its default when the result was made without one)."""
    from .request import ReportRequest

    return getattr(result.request, name) if result.request is not None else ReportRequest.__dataclass_fields__[
        name].default


def _mito_text(qc: dict) -> str:
    value = qc.get("median % mitochondrial")
    return "" if value is None else f", {value:.1f}% mitochondrial"


def _method_title(record: dict) -> str:
    from .. import methods

    name = record["method"]
    return "domains given in the input" if name == PRECOMPUTED else methods.get(name).title


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def overview(result: SampleResult) -> None:
    """Key facts of the sample and the run, then the QC plots."""
    from .. import pl

    record = result.record
    adata = result.adata
    facts = pd.DataFrame([
        ("sample", record["sample"]),
        ("input", "; ".join(input_names(record["inputs"]))),
        ("platform", _platform(adata) or "not recorded"),
        ("method", record["method"]),
        ("spots", f"{adata.n_obs:,}"),
        ("genes", f"{adata.n_vars:,}"),
        ("domains", record["n_domains"]),
        ("clustering", record.get("clustering_engine") or "given"),
        ("GO engine", record["enrichment"]["engine"] or "not run"),
        ("tissue image", "yes" if _has_image(adata) else "no (domains drawn on the coordinates)"),
    ], columns=["", "value"])
    table(facts)
    show(pl.qc(adata), alt="Quality control: histograms of counts and of detected genes per spot, and the counts "
                           "of each spot on the tissue")


def _platform(adata) -> str:
    """The platform the input came from, with its bin size and coordinate unit where the reader recorded them."""
    from .. import io

    name = io.platform(adata)
    if name is None:
        return ""
    library = next(iter((adata.uns.get("spatial") or {}).values()), {})
    size = (library.get("metadata") or {}).get("bin_size_um") if isinstance(library, dict) else None
    if size is not None:
        name += ", segmented cells" if size == "cells" else f", {size} µm bins"
    unit = io.coordinate_unit_um(adata)
    return name + (f" (coordinates: {unit:.4g} µm per unit)" if unit else "")


def domains_on_tissue(result: SampleResult, key: str = "domain") -> None:
    from .. import pl

    adata = result.adata
    if result.batch_key:
        for name, part in slices_of(result):
            show(pl.domains(part, key, image=False, title=f"{name}: domains"),
                 alt=f"Map of the domains of slice {name}, each spot coloured by its domain")
    elif _has_image(adata):  # the H&E alone beside the domains drawn on it, both cropped to the tissue
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(15, 7.5))
        pl.tissue(adata, ax=axes[0])
        pl.domains(adata, key, ax=axes[1], title=f"{adata.obs[key].nunique()} domains ({result.record['method']})")
        show(figure, alt=f"The tissue image, and beside it the {adata.obs[key].nunique()} domains drawn on it, each "
                         "spot coloured by its domain as in the summary table")
    else:
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(10, 9))
        pl.domains(adata, key, ax=ax, title=f"{adata.obs[key].nunique()} domains ({result.record['method']})")
        show(figure, alt=f"Map of the {adata.obs[key].nunique()} domains on the tissue, each spot coloured by its "
                         "domain as in the summary table")
    if not result.batch_key:
        interactive_map(result, key)


def interactive_map(result: SampleResult, key: str = "domain") -> None:
    """The domains as points to zoom (wheel), pan (drag) and hover (spot, domain and annotation), for samples of
    at most :data:`INTERACTIVE_MAP_LIMIT` spots; larger samples keep the static map only."""
    from IPython.display import HTML, display

    from .. import io, pl

    adata = result.adata
    if adata.n_obs > INTERACTIVE_MAP_LIMIT:
        note(f"{adata.n_obs:,} spots: above {INTERACTIVE_MAP_LIMIT:,}, the page keeps the static map only (an "
             "interactive one would make it too heavy to open).")
        return
    domains = adata.obs[key]
    categories = list(domains.cat.categories)
    codes = domains.cat.codes.to_numpy()
    xy = io.spatial_coordinates(adata)
    data = {"x": np.round(xy[:, 0], 2).tolist(), "y": np.round(xy[:, 1], 2).tolist(), "domain": codes.tolist(),
            "names": [str(c) for c in categories], "colours": pl.domain_colours(len(categories)),
            "spots": adata.obs_names.astype(str).tolist(), "key": key}
    if result.label_key:
        data["label_key"] = result.label_key
        data["labels"] = adata.obs[result.label_key].astype(str).tolist()
    payload = html.escape(json.dumps(data, separators=(",", ":")), quote=True)
    display(HTML(f'<div class="spot-map" data-map="{payload}"><canvas width="900" height="700" role="img" '
                 f'aria-label="Interactive map of the {len(categories)} domains: scroll to zoom, drag to move, '
                 f'point at a spot to see its name and domain"></canvas><div class="spot-map-tip"></div>'
                 '<p class="report-note">Scroll to zoom, drag to move, double-click to reset; point at a spot to '
                 'see its name and domain.</p></div>'))


def umap(result: SampleResult, key: str = "domain") -> None:
    from .. import pl

    colours = [key] + ([result.batch_key] if result.batch_key else [])
    show(pl.embedding(result.adata, "X_umap", colours),
         alt=f"UMAP of the embedding, spots coloured by {' and by '.join(colours)}")
    note(f"UMAP of {result.record['representation']}.")


def sizes(result: SampleResult, key: str = "domain") -> None:
    from .. import pl

    show(pl.domain_sizes(result.adata, key), alt="Bar chart of the number of spots in each domain")


def n_domains(result: SampleResult) -> None:
    """The score of every candidate number of domains, when the number was chosen from the data."""
    from .. import pl

    record = result.adata.uns["spatialdomains"]["cluster"]
    show(pl.n_domains_scores(result.adata), alt="Line plot of the score of each candidate number of domains, the "
                                                 "chosen number marked")
    rule = ("the number whose domains are best separated in the embedding (the mean silhouette: how much closer "
            "each spot is to its own domain than to the nearest other one)" if record["n_domains_chosen_by"] ==
            "silhouette" else "the most detailed partition that k-means reproduces on random subsamples of the spots")
    note(f"No number of domains was given, so {record['n_domains']} was chosen by {record['n_domains_chosen_by']}: "
         f"{rule}. Give the number (--n-domains, n_domains=) when the biology fixes it.")


def pseudotime(result: SampleResult, key: str = "domain") -> None:
    """Diffusion pseudotime over the embedding: on the tissue, and per domain."""
    from .. import pl

    adata = result.adata
    if "pseudotime" not in adata.obs:
        note(result.record.get("pseudotime_note", "Pseudotime was not computed for this sample."))
        return
    show(pl.pseudotime(adata), alt="Map of the tissue coloured by pseudotime, from 0 at the root spot (a star) to 1")
    show(pl.pseudotime_by_domain(adata, groupby=key), alt="Box plots of pseudotime in each domain, ordered by median")
    record = adata.uns["spatialdomains"]["pseudotime"]
    note(f"Diffusion pseudotime over {record['use_rep']} (SpaceFlow's pseudo-spatiotemporal map, as in the "
         f"Spotscape paper), from the {record['root_chosen_by']}: the domains in the order of their median suggest a "
         "gradient across the tissue (e.g. cortical layers). The direction is the data's; to fix it from a domain "
         "run sd.tl.pseudotime(adata, root_domain=...) on the result .h5ad.")


def markers(result: SampleResult, key: str = "domain", n_genes: int | None = None) -> None:
    """The top ``n_genes`` markers of each domain (the request's ``n_markers`` by default): dot plot and heatmap."""
    from .. import pl

    n_genes = n_genes or _requested(result, "n_markers")
    show(pl.marker_dotplot(result.adata, result.markers, key=key, n_genes=n_genes),
         alt=f"Dot plot of the top {n_genes} marker genes of each domain: mean expression (colour) and fraction of "
             "spots expressing (size) in every domain")
    show(pl.marker_heatmap(result.adata, result.markers, key=key, n_genes=n_genes),
         alt=f"Heatmap of the top {n_genes} marker genes of each domain, z-scores of mean expression per domain")


def deg_tables(result: SampleResult) -> None:
    """Per domain, all its significant genes (up first, by score); every tested gene is in markers.csv. Genes are
    named by symbol, with the name in the data and its ID beside it where they differ."""
    markers = result.markers
    names = ["symbol"] + [column for column, other in (("gene", "symbol"), ("gene_id", "gene"))
                          if column in markers and (markers[column].astype(str) != markers[other].astype(str)).any()]
    columns = names + ["log2fc", "pvalue", "padj", "pct_in", "pct_out", "score"]
    for domain in markers["domain"].cat.categories:
        found = markers[(markers["domain"] == domain) & markers["significant"]]
        up = found[found["log2fc"] > 0].sort_values("score", ascending=False)
        down = found[found["log2fc"] < 0].sort_values("score")
        part = pd.concat([up, down])
        table(part[columns], caption=f"domain {domain} markers: {len(up)} up, {len(down)} down")


def volcano(result: SampleResult) -> None:
    from .. import pl

    params = result.record["markers"]
    show(pl.volcano(result.markers, min_log2fc=params["min_log2fc"], max_pvalue=params["max_pvalue"],
                    pvalue=params["pvalue"]),
         alt="Volcano plots, one per domain: each gene's log2 fold change in the domain against its -log10 p value; "
             "significant genes coloured, the top ones named")


def go(result: SampleResult, n_terms: int = 10) -> None:
    """Engine statement, then a clusterProfiler-style dot plot and the top terms per domain."""
    from .. import pl

    enrichment = result.record["enrichment"]
    if result.go_error:
        note(f"GO enrichment was not run: {result.go_error}")
        return
    note(f"Engine: {enrichment['engine']} — annotation: {enrichment['annotation']}. Up-regulated significant "
         "markers of each domain against all measured genes; terms shown pass p.adjust < 0.05 and q < 0.2.")
    shown = result.go.groupby(result.go["domain"].astype(str), sort=False).head(n_terms)
    significance = -np.log10(np.maximum(shown["p.adjust"].to_numpy(dtype=float), np.nextafter(0, 1)))
    colour_range = (float(significance.min()), float(significance.max())) if len(shown) else None
    for domain in result.markers["domain"].cat.categories:
        rows = result.go[result.go["domain"].astype(str) == str(domain)]
        if rows.empty:
            note(f"Domain {domain}: no enriched GO term.")
            continue
        show(pl.go_dotplot(rows, n_terms=n_terms, colour_range=colour_range,
                           title=f"domain {domain}: {len(rows)} enriched terms"),
             alt=f"GO terms enriched in domain {domain}: the top {min(n_terms, len(rows))} by p value, with their "
                 "gene ratio, adjusted p value (colour, one scale for every domain) and gene count (size)")
        if len(rows):
            shown = rows[["ID", "Description", "GeneRatio", "BgRatio", "pvalue", "p.adjust", "qvalue", "Count"]].copy()
            genes = rows["geneSymbols"] if "geneSymbols" in rows else rows["geneID"]
            shown["genes"] = genes.astype(str).str.replace("/", ", ")
            table(shown, caption=f"domain {domain} GO terms")


def integration(result: SampleResult, key: str = "domain") -> None:
    """For several slices: composition per slice and the integration scores; a note otherwise."""
    import matplotlib.pyplot as plt

    from .. import metrics, pl

    adata, batch = result.adata, result.batch_key
    composition = pd.crosstab(adata.obs[batch], adata.obs[key], normalize="index")
    figure, ax = plt.subplots(figsize=(7, 0.5 * len(composition) + 1.5))
    colours = pl.domain_colours(len(adata.obs[key].cat.categories))  # as on the domain maps
    composition.plot.barh(stacked=True, ax=ax, color=[colours[list(adata.obs[key].cat.categories).index(d)]
                                                      for d in composition.columns])
    ax.set_xlabel("fraction of spots")
    ax.legend(title=key, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    show(figure, alt="Stacked bars: the share of each domain in every slice")
    scores = metrics.integration(adata.obsm[result.record["representation"]], adata.obs[batch].astype(str),
                                 adata.obs[key])
    table(pd.DataFrame([{k: float(v) for k, v in scores.items()}]), caption="integration scores")


def denoised(result: SampleResult) -> None:
    """The top marker of each domain as measured and as the model's decoder gives it back."""
    from .. import pl

    if result.denoised is None:
        note(result.record["denoised_note"])
        return
    imputed = result.denoised
    record = imputed.uns["spatialdomains"]["impute"]
    name = None
    if result.batch_key:  # one slice, in its own frame (each slice has its own coordinates)
        name = str(imputed.obs[result.batch_key].astype(str).iloc[0])
        imputed = imputed[(imputed.obs[result.batch_key].astype(str) == name).to_numpy()]
    imputed = imputed.copy()
    imputed.var["symbol"] = [f"{symbol} (domain {domain} marker)" for symbol, domain in
                             zip(imputed.var["symbol"], imputed.var["marker_of"])]
    show(pl.denoised(imputed, list(imputed.var_names)),
         alt="Maps of the tissue: for each gene, the measured values (left) and the denoised values (right) on one "
             "colour scale" + (f" (slice {name})" if name else ""))
    note(f"The top marker gene of {imputed.n_vars} domain{'s' if imputed.n_vars > 1 else ''}, measured (left) and "
         f"reconstructed by {_method_title(result.record)}'s decoder (right), on one scale ({record['scale']}). The "
         "decoder smooths each gene over the tissue's graph: the domain pattern stands out where single spots are "
         f"sparse.{f' Slice {name} of {result.adata.obs[result.batch_key].nunique()}.' if name else ''} Denoised "
         "values of every gene: sd.tl.impute (R: imputeExpression), on the result .h5ad for Spotscape, on the "
         "paired input for SpaMI.")


def transfer(result: SampleResult, key: str = "domain") -> None:
    """Each slice's annotation predicted from the most annotated slice, scored against its own annotation."""
    import matplotlib.pyplot as plt

    from .. import pl

    scores, label_key, adata = result.transfer, result.label_key, result.adata
    table(scores, caption=f"{label_key} of each slice predicted from slice '{scores['from slice'].iloc[0]}'")
    predicted = f"{label_key}_transferred"
    shown = [name for name in scores["slice"]][:3]
    parts = [adata[(adata.obs[result.batch_key].astype(str) == name).to_numpy()] for name in shown]
    extents = [np.ptp(np.asarray(part.obsm["spatial"], dtype=float)[:, :2], axis=0) for part in parts]
    aspect = max(min(max(float(h / max(w, 1e-9)) for w, h in extents), 2.0), 0.3)  # rows as tall as the tissue
    figure, axes = plt.subplots(len(shown), 2, figsize=(11, (4.6 * aspect + 0.9) * len(shown)), squeeze=False)
    for row, name, part in zip(axes, shown, parts):
        pl.domains(part, label_key, ax=row[0], image=False, title=f"{name}: {label_key} (annotation)")
        pl.domains(part, predicted, ax=row[1], image=False, title=f"{name}: {label_key} predicted")
        row[0].get_legend().remove()  # one legend, beside the predictions
        row[1].get_legend().set_title(label_key)
    show(figure, alt=f"Maps of each slice: its own {label_key} (left) and the {label_key} predicted from another "
                     "slice (right)")
    note(f"Each spot of a slice is matched to its most similar spot of slice '{scores['from slice'].iloc[0]}' in the "
         f"joint embedding ({result.record['representation']}; SLAT's rule, as the Spotscape paper used: the 20 most "
         "similar spots, then the one at the nearest relative position) and takes its label. Confidence is the "
         "share of those 20 that carry the same label. A high ARI means the embedding aligns the slices; "
         f"the predictions are in obs['{predicted}'] of the result .h5ad.")


def conditions(result: SampleResult, key: str = "domain") -> None:
    """Per domain, the genes that differ between conditions and each domain's share of the spots per condition."""
    import matplotlib.pyplot as plt

    from .. import pl

    comparison, record = result.conditions, result.record["conditions"]
    condition = result.condition_key
    order = [str(d) for d in result.adata.obs[key].cat.categories]
    shares = comparison.shares.sort_values(["condition", "slice"])
    by_slice = shares.set_index(shares["slice"].astype(str) + " (" + shares["condition"].astype(str) + ")")
    by_slice = by_slice[[d for d in order if d in by_slice.columns]]
    colours = dict(zip(order, pl.domain_colours(len(order))))
    figure, ax = plt.subplots(figsize=(7, 0.45 * len(by_slice) + 1.8))
    by_slice.plot.barh(stacked=True, ax=ax, color=[colours[d] for d in by_slice.columns])
    ax.invert_yaxis()
    ax.set_xlabel("share of the slice's spots")
    ax.set_ylabel(f"slice ({condition})")
    ax.legend(title=key, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    show(figure, alt=f"Stacked bars: each slice's share of every domain, slices grouped by {condition}")
    reference = record["reference"]
    table(comparison.composition.rename(columns={"condition": condition, "share": f"share in {condition}",
                                                 "share_reference": f"share in {reference}", "pvalue": "p-value"}),
          caption=f"each domain's mean share of a slice's spots, against {reference}")
    genes = comparison.genes
    found = genes[genes["padj"] < 0.05].sort_values(["domain", "padj"]) if len(genes) else genes
    if not record["tests"]:
        note(f"No domain has at least {record['min_spots']} spots in each condition, so no genes were compared. "
             "Domains found in one condition only may be real, or a sign that the slices were not integrated (see "
             "the integration section).")
        return
    caution = (" A Wilcoxon test on spots treats the spots as replicates and so overstates confidence; with at least "
               "two slices per condition the report uses DESeq2 on per-slice pseudobulks instead."
               if any("wilcoxon" in test for test in record["tests"]) else "")
    note(f"{condition}: {', '.join(map(str, record['conditions']))}, each against '{reference}' within each domain. "
         f"Genes compared with: {'; '.join(record['tests'])}.{caution} "
         f"{record['n_significant']:,} gene × domain differences at adjusted p < 0.05"
         + (f"; domains left out (too few spots): {', '.join(map(str, record['domains_left_out']))}"
            if record["domains_left_out"] else "") + ".")
    if len(found):
        table(found.head(500), caption="genes that differ between conditions within a domain (adjusted p < 0.05; "
                                       "the 500 strongest)")


def attention(result: SampleResult) -> None:
    from .. import pl

    show(pl.attention(result.multiomics), alt="Map of the tissue coloured by the weight SpaMI's attention gives "
                                              "each modality in every spot")


def provenance(result: SampleResult) -> None:
    """What was run, in tables: the run, the model's settings and training, the clustering, markers and GO, the time
    of each step and the package versions; the complete record (also in provenance.json) folded below."""
    from IPython.display import HTML, display

    record = result.record
    model = record.get("model", {})
    method_record = model.get(record["method"], {}) if isinstance(model, dict) else {}
    run = {"sample": record["sample"], "inputs": ", ".join(input_names(record["inputs"])), "method": record["method"],
           "seed": record["seed"], "spots": record["n_spots"], "genes": record["n_genes"],
           "domains": record["n_domains"], "embedding": record["representation"], "created": record["created"]}
    table(_rows(run), caption="run")
    if method_record:
        training = {k: v for k, v in (method_record.get("training") or {}).items() if k != "loss_history"}
        table(_rows({**method_record.get("parameters", {}), **{f"training: {k}": v for k, v in training.items()},
                     **{f"coordinates: {k}": v for k, v in (method_record.get("coordinates") or {}).items()},
                     **{f"threads: {k}": v for k, v in (method_record.get("threads") or {}).items()}}),
              caption=f"{record['method']}: settings and training")
    if isinstance(model, dict) and isinstance(model.get("cluster"), dict):
        table(_rows({k: v for k, v in model["cluster"].items() if k != "timings"}), caption="clustering")
    table(_rows({**{f"markers: {k}": v for k, v in record["markers"].items()},
                 **{f"GO: {k}": v for k, v in record["enrichment"].items() if v not in (None, {}, "")}}),
          caption="marker genes and GO enrichment")
    steps = dict(record.get("timings_seconds", {}))
    for name, seconds in (method_record.get("timings") or {}).items():
        steps[f"{record['method']}: {name}"] = seconds
    table(pd.DataFrame({"step": list(steps), "seconds": [round(float(v), 1) for v in steps.values()]}),
          caption="time per step (seconds)")
    table(_rows(record.get("versions", {})), caption="versions")
    trimmed = {**record, "inputs": input_names(record["inputs"]), "model": _without_gene_lists(model)}
    display(HTML("<details><summary>the complete record (as in provenance.json)</summary><pre>"
                 + html.escape(json.dumps(trimmed, indent=1, default=str)) + "</pre></details>"))


def input_names(paths) -> list[str]:
    """Inputs by file name only (for a folder inside a 10x run, the run's name): a report leaves the machine's
    paths out."""
    from .._tenx import run_name

    return [run_name(Path(str(path))) for path in paths]


def _rows(values: dict) -> pd.DataFrame:
    """A two-column table of settings; lists and dicts written compactly, long lists summarised."""
    def shown(value):
        if isinstance(value, (list, tuple, np.ndarray)):
            items = list(value)
            return ", ".join(map(str, items)) if len(items) <= 8 else f"{len(items)} values"
        if isinstance(value, dict):
            return "; ".join(f"{k}: {shown(v)}" for k, v in value.items())
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    return pd.DataFrame({"": list(values), "value": [shown(v) for v in values.values()]})


def _without_gene_lists(model):
    if not isinstance(model, dict):
        return model
    return {name: ({k: v for k, v in entry.items() if k not in ("genes", "denoised_genes")}
                   if isinstance(entry, dict) else entry) for name, entry in model.items()}


def applies(anchor: str, result: SampleResult) -> bool:
    """Whether a section has anything to show for this sample: integration needs several slices, the attention
    map a SpaMI run, the curve of candidate numbers of domains a number chosen from the data, pseudotime a model's
    embedding, denoised expression a decoder (Spotscape, SpaMI), label transfer several annotated slices, the
    conditions a condition column; the others always apply."""
    if anchor == "integration":
        return bool(result.batch_key)
    if anchor == "attention":
        return result.multiomics is not None and "spami_attention" in result.multiomics.obsm
    if anchor == "n-domains":
        details = result.adata.uns.get("spatialdomains", {}).get("cluster", {}).get("details", {})
        return any(f"{name}_by_n_domains" in details for name in ("silhouette", "stability"))
    if anchor == "pseudotime":
        return result.record["method"] != PRECOMPUTED
    if anchor == "denoised":
        return result.denoised is not None or "denoised_note" in result.record
    if anchor == "transfer":
        return result.transfer is not None and len(result.transfer) > 0
    if anchor == "conditions":
        return result.conditions is not None
    return True


def _has_image(adata) -> bool:
    return any(entry.get("images") for entry in adata.uns.get("spatial", {}).values() if isinstance(entry, dict))
