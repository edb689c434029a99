"""Built-in example data from the package's own simulator (no downloads).

``simulate_visium`` lays spots on a Visium-like hexagonal grid, splits the tissue into layered domains with
curved boundaries and draws negative-binomial counts. Each domain switches on a marker program of real human
genes that share one Gene Ontology biological-process term (``data/simulator_genes.tsv``, built from
org.Hs.eg.db by ``tools/make_simulator_genes.R``), so GO enrichment of a domain's markers can recover the term
planted in it.

``simulate_cells`` is the cell-level counterpart at Xenium scale (up to millions of cells): irregular cell
positions in µm, cell types with their own expression, and niches (the domains) that differ only by their mix
of cell types, with counts as sparse as a Xenium panel's. It never holds a dense cells × genes array.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError

#: Distance between neighbouring spot centres in full-resolution pixels (Visium: 100 µm).
SPOT_SPACING = 100.0
#: Resolution of the optional synthetic image relative to full resolution (stored as the 'hires' image).
IMAGE_SCALE = 0.25


@lru_cache(maxsize=1)
def simulator_genes() -> pd.DataFrame:
    """The simulator's genes: columns ``symbol``, ``gene_id`` (the Ensembl ID org.Hs.eg.db gives the symbol; the
    symbol itself for the few it does not know), ``program`` (GO ID or 'background') and ``term``."""
    with resources.files(__package__).joinpath("data/simulator_genes.tsv").open() as handle:
        return pd.read_csv(handle, sep="\t", keep_default_na=False)


def simulate_visium(
    n_spots: int = 3000,
    n_domains: int = 5,
    *,
    seed: int = 0,
    marker_fold_change: float = 4.0,
    mean_library_size: float = 2500.0,
    dispersion: float = 5.0,
    image: bool = False,
    var_names: str = "symbols",
) -> ad.AnnData:
    """Simulate a Visium-like sample with ``n_domains`` layered domains and raw counts.

    Parameters
    ----------
    n_spots
        Approximate number of spots (the grid is the nearest near-square hexagonal lattice).
    n_domains
        Number of domains, at most the number of planted GO programs (8).
    seed
        Seed of the simulation; the same seed always gives the same data.
    marker_fold_change
        Expression fold change of a domain's marker program inside the domain (half of it leaks, in log
        scale, into the neighbouring layers, which blurs boundaries as in real tissue).
    mean_library_size
        Mean total counts per spot; library sizes vary log-normally around it.
    dispersion
        Negative-binomial dispersion θ (variance μ + μ²/θ).
    image
        Also draw a synthetic tissue image whose texture depends on the domain.
    var_names
        ``'symbols'`` (gene symbols, with the Ensembl IDs in ``var['gene_ids']`` as Space Ranger gives them) or
        ``'gene_ids'`` (Ensembl IDs only, no symbol column: data whose symbols must be looked up).

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR), ``obsm['spatial']`` (full-resolution x, y), the truth in
    ``obs['ground_truth']``, per-spot totals in ``obs['total_counts']``, each gene's program in ``var['program']``, the planted GO term of each domain in
    ``uns['simulation']`` and, laid out as scanpy does, scale factors (and the image) in ``uns['spatial']``.
    """
    genes = simulator_genes()
    programs = [p for p in pd.unique(genes["program"]) if p != "background"]
    if not 2 <= n_domains <= len(programs):
        raise InputError(f"n_domains must be between 2 and {len(programs)}, got {n_domains}")
    if n_spots < 50:
        raise InputError(f"n_spots must be at least 50, got {n_spots}")
    if var_names not in ("symbols", "gene_ids"):
        raise InputError(f"var_names must be 'symbols' or 'gene_ids', not {var_names!r}")
    rng = np.random.default_rng(seed)

    coordinates, array_row, array_col = _hex_grid(n_spots)
    curve = _LayerCurve.draw(coordinates, rng)
    layer_position = curve.position(coordinates)
    boundaries = _layer_boundaries(layer_position, n_domains, rng)
    domain = np.searchsorted(boundaries, layer_position)

    log_means = _domain_log_means(genes, programs[:n_domains], marker_fold_change, rng)
    library_size = mean_library_size * rng.lognormal(-0.5 * 0.35**2, 0.35, size=len(domain))
    proportions = np.exp(log_means[domain])
    proportions /= proportions.sum(axis=1, keepdims=True)
    mean = proportions * library_size[:, None]
    counts = rng.poisson(rng.gamma(shape=dispersion, scale=mean / dispersion)).astype(np.float32)

    domain_names = np.array([f"D{i + 1}" for i in range(n_domains)])
    obs = pd.DataFrame(
        {
            "ground_truth": pd.Categorical(domain_names[domain], categories=domain_names),
            "total_counts": counts.sum(axis=1),
            "in_tissue": 1,
            "array_row": array_row,
            "array_col": array_col,
        },
        index=pd.Index([f"spot{i:05d}-1" for i in range(len(domain))]),
    )
    if var_names == "symbols":
        var = genes.set_index("symbol")[["gene_id", "program", "term"]].rename(columns={"gene_id": "gene_ids"})
    else:
        var = genes.set_index("gene_id")[["program", "term"]]
    var.index.name = None
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.var_names_make_unique()
    adata.obsm["spatial"] = coordinates
    scalefactors = {
        "spot_diameter_fullres": 0.55 * SPOT_SPACING,
        "fiducial_diameter_fullres": 1.055 * SPOT_SPACING,
        "tissue_hires_scalef": IMAGE_SCALE,
        "tissue_lowres_scalef": IMAGE_SCALE / 4,
    }
    images = {"hires": _tissue_image(coordinates, curve, boundaries, rng)} if image else {}
    adata.uns["spatial"] = {"simulated": {"images": images, "scalefactors": scalefactors}}
    planted = programs[:n_domains]
    terms = genes.drop_duplicates("program").set_index("program")["term"]
    adata.uns["simulation"] = {
        "seed": seed,
        "domains": list(domain_names),
        "go_id": planted,
        "go_term": [terms[p] for p in planted],
    }
    return adata


def _hex_grid(n_spots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A near-square hexagonal lattice (odd rows shifted by half a spacing), full-resolution pixels."""
    row_height = SPOT_SPACING * np.sqrt(3) / 2
    n_cols = max(2, int(round(np.sqrt(n_spots * row_height / SPOT_SPACING))))
    n_rows = max(2, int(round(n_spots / n_cols)))
    array_row, col_index = np.divmod(np.arange(n_rows * n_cols), n_cols)
    x = (col_index + 0.5 * (array_row % 2)) * SPOT_SPACING + SPOT_SPACING
    y = array_row * row_height + SPOT_SPACING
    array_col = 2 * col_index + array_row % 2  # Visium numbers columns in steps of two
    return np.stack([x, y], axis=1), array_row, array_col


@dataclass(frozen=True)
class _LayerCurve:
    """Layers follow the vertical axis, bent by a sine wave and a bowl, in the frame of the spot grid."""

    origin: np.ndarray
    span: np.ndarray
    amplitude: float
    phase: float
    bowl: float

    @classmethod
    def draw(cls, coordinates: np.ndarray, rng: np.random.Generator) -> "_LayerCurve":
        origin = coordinates.min(axis=0)
        return cls(origin, coordinates.max(axis=0) - origin, rng.uniform(0.04, 0.08),
                   rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.3))

    def position(self, points: np.ndarray) -> np.ndarray:
        u, v = ((points - self.origin) / self.span).T
        return v + self.amplitude * np.sin(2 * np.pi * u + self.phase) + self.bowl * (u - 0.5) ** 2


def _layer_boundaries(position: np.ndarray, n_domains: int, rng: np.random.Generator) -> np.ndarray:
    """Inner boundaries between layers, with random layer thicknesses of at least half the average."""
    widths = 0.5 + rng.dirichlet(np.full(n_domains, 4.0)) * n_domains * 0.5
    edges = np.cumsum(widths / widths.sum())[:-1]
    low, high = np.quantile(position, [0.0, 1.0])
    return low + edges * (high - low)


def _domain_log_means(genes: pd.DataFrame, planted: list[str], fold_change: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Log relative expression of each gene in each domain (n_domains × n_genes)."""
    base = rng.normal(0.0, 1.2, size=len(genes))
    log_means = np.tile(base, (len(planted), 1))
    # Mild domain differences in a tenth of the background genes, so that markers are not the only signal.
    background = np.flatnonzero(genes["program"].to_numpy() == "background")
    varying = rng.choice(background, size=len(background) // 10, replace=False)
    log_means[:, varying] += rng.normal(0.0, 0.3, size=(len(planted), len(varying)))
    log_fold = np.log(fold_change)
    for k, program in enumerate(planted):
        members = genes["program"].to_numpy() == program
        log_means[k, members] += log_fold
        for neighbour in (k - 1, k + 1):
            if 0 <= neighbour < len(planted):
                log_means[neighbour, members] += 0.5 * log_fold
    return log_means


def _tissue_image(coordinates: np.ndarray, curve: _LayerCurve, boundaries: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """An H&E-coloured image at ``IMAGE_SCALE`` whose stain density and stripe texture (angle, period) depend
    on the domain, coarse enough (periods 8–20 px, about 5–12 per patch) to pass STAIG's low-pass filter."""
    width, height = np.ceil((coordinates.max(axis=0) + SPOT_SPACING) * IMAGE_SCALE).astype(int)
    rows, cols = np.mgrid[0:height, 0:width]
    pixels_fullres = np.stack([cols.ravel(), rows.ravel()], axis=1) / IMAGE_SCALE
    domain = np.searchsorted(boundaries, curve.position(pixels_fullres)).reshape(height, width)
    n_domains = len(boundaries) + 1
    angles = np.linspace(0, np.pi, n_domains, endpoint=False)
    periods = np.linspace(8.0, 20.0, n_domains)
    density = rng.permutation(np.linspace(0.25, 0.75, n_domains))
    theta, period = angles[domain], periods[domain]
    stripes = np.sin(2 * np.pi * (cols * np.cos(theta) + rows * np.sin(theta)) / period)
    intensity = np.clip(density[domain] + 0.25 * stripes + 0.3 * (rng.random((height, width)) - 0.5), 0, 1)
    pink, purple = np.array([0.93, 0.72, 0.82]), np.array([0.45, 0.25, 0.55])
    image = pink + intensity[..., None] * (purple - pink)
    return image.astype(np.float32)


#: Mean distance between neighbouring cell centres in µm (Xenium tissue: about 10 µm).
CELL_SPACING_UM = 10.0
#: Cells drawn per chunk when sampling transcripts, which bounds the simulator's memory.
_CELLS_PER_CHUNK = 50_000


def simulate_cells(
    n_cells: int = 100_000,
    n_domains: int = 6,
    n_cell_types: int = 12,
    n_genes: int = 500,
    seed: int = 0,
    *,
    mean_transcripts: float = 200.0,
    marker_fold_change: float = 6.0,
    mixture_concentration: float = 0.5,
) -> ad.AnnData:
    """Simulate a Xenium-like sample of ``n_cells`` cells whose niches (domains) differ by their mix of cell types.

    Cells sit on a jittered square lattice (``CELL_SPACING_UM`` apart, in µm). Niches are patches with irregular
    boundaries: the cells nearest to each of several seed points, after a smooth warp of the plane. Each niche
    draws its own cell-type proportions (Dirichlet with ``mixture_concentration``; niches are redrawn until every
    pair differs by at least a third of the cells); each cell's type is drawn from its niche's proportions; each
    type has its own expression (a shared baseline plus its own marker genes). No gene marks a niche directly: a
    niche shows only through the types around a cell, as tissue niches do.

    Parameters
    ----------
    n_cells
        Number of cells (the lattice is the nearest near-square one; exactly ``n_cells`` are kept).
    n_domains, n_cell_types
        Niches (at least 2) and cell types (at least 2).
    n_genes
        Panel size; genes take the simulator's real gene symbols while they last.
    seed
        Seed of the simulation; the same seed always gives the same data.
    mean_transcripts
        Mean transcripts per cell (log-normal spread); a Xenium panel of a few hundred genes gives 100–400.
    marker_fold_change
        How much more a cell type expresses its own marker genes.
    mixture_concentration
        Dirichlet concentration of the niches' cell-type proportions: lower makes niches purer.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR, float32), positions in µm in ``obsm['spatial']``, the niche in
    ``obs['ground_truth']``, the type in ``obs['cell_type']``, ``obs['total_counts']``, and the niches' cell-type
    proportions and settings in ``uns['simulation']``.
    """
    if n_cells < 100:
        raise InputError(f"n_cells must be at least 100, got {n_cells}")
    if n_domains < 2 or n_cell_types < 2:
        raise InputError(f"n_domains and n_cell_types must be at least 2, got {n_domains} and {n_cell_types}")
    if n_genes < 2 * n_cell_types:
        raise InputError(f"n_genes must be at least twice n_cell_types ({2 * n_cell_types}), got {n_genes}")
    rng = np.random.default_rng(seed)
    coordinates = _jittered_lattice(n_cells, rng)
    niche = _warped_patches(coordinates, n_domains, rng)
    proportions = _niche_mixtures(n_domains, n_cell_types, mixture_concentration, rng)
    cell_type = _draw_categories(proportions[niche], rng)
    profiles = _type_profiles(n_cell_types, n_genes, marker_fold_change, rng)
    totals = np.maximum(1, np.round(mean_transcripts * rng.lognormal(-0.5 * 0.5**2, 0.5, size=n_cells)))
    counts = _sample_transcripts(cell_type, totals.astype(np.int64), profiles, rng)

    symbols = simulator_genes()["symbol"].to_numpy()
    gene_names = [symbols[i] if i < len(symbols) else f"SIMGENE{i + 1:05d}" for i in range(n_genes)]
    domain_names = np.array([f"N{i + 1}" for i in range(n_domains)])
    type_names = np.array([f"T{i + 1}" for i in range(n_cell_types)])
    obs = pd.DataFrame(
        {
            "ground_truth": pd.Categorical(domain_names[niche], categories=domain_names),
            "cell_type": pd.Categorical(type_names[cell_type], categories=type_names),
            "total_counts": np.asarray(counts.sum(axis=1)).ravel(),
        },
        index=pd.Index([f"cell{i:07d}" for i in range(n_cells)]),
    )
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index(gene_names)))
    adata.obsm["spatial"] = coordinates
    adata.uns["simulation"] = {
        "seed": seed,
        "kind": "cells",
        "microns_per_unit": 1.0,
        "domains": list(domain_names),
        "cell_types": list(type_names),
        "proportions": proportions,
        "mean_transcripts": mean_transcripts,
        "marker_fold_change": marker_fold_change,
        "mixture_concentration": mixture_concentration,
    }
    return adata


def simulate_paired_cells(
    n_cells: int = 100_000,
    n_domains: int = 6,
    n_cell_types: int = 12,
    n_genes: int = 500,
    n_proteins: int = 30,
    seed: int = 0,
    *,
    protein_fold_change: float = 4.0,
):
    """Simulate a cell-level sample with RNA and a protein panel measured in the same cells (spatial CITE-seq-like),
    for the paired-omics methods at Xenium scale.

    The RNA is exactly :func:`simulate_cells` with the same arguments (niches that differ by their mix of cell
    types). Each cell type also has its own protein profile: a shared baseline plus a few marker proteins
    ``protein_fold_change``-fold higher, drawn as negative-binomial antibody counts with a large background, so
    the proteins tell the cell types apart and, like the RNA, show the niches only through a cell's surroundings.
    The protein stream is seeded separately, so the RNA does not change with ``n_proteins``.

    Returns a MuData with modalities ``'rna'`` and ``'adt'`` (raw counts, CSR, in ``X``; positions in µm in
    ``obsm['spatial']``; ``obs['ground_truth']`` and ``obs['cell_type']``), the truth and positions also at its top
    level, and the settings in ``uns['simulation']``.
    """
    import mudata

    if n_proteins < n_cell_types:
        raise InputError(f"n_proteins must be at least n_cell_types ({n_cell_types}), got {n_proteins}")
    rna = simulate_cells(n_cells, n_domains, n_cell_types, n_genes, seed)
    rng = np.random.default_rng([seed, 1])
    cell_type = rna.obs["cell_type"].cat.codes.to_numpy()
    log_rates = np.tile(rng.normal(0.0, 0.5, n_proteins), (n_cell_types, 1))
    markers = rng.permutation(n_proteins)[: n_cell_types * (n_proteins // n_cell_types)].reshape(n_cell_types, -1)
    for t in range(n_cell_types):
        log_rates[t, markers[t]] += np.log(protein_fold_change)
    profiles = np.exp(log_rates) / np.exp(log_rates).sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(800), 0.3, n_cells).astype(np.float32)
    counts = sp.vstack([
        sp.csr_matrix(rng.poisson(rng.gamma(10.0, profiles[cell_type[rows]] * library[rows, None] / 10.0))
                      .astype(np.float32))
        for rows in np.array_split(np.arange(n_cells), max(1, n_cells // 100_000))], format="csr")
    adt = ad.AnnData(counts, obs=rna.obs[["ground_truth", "cell_type"]].copy(),
                     var=pd.DataFrame({"feature_types": "Antibody Capture"},
                                      index=[f"protein{j:03d}" for j in range(n_proteins)]))
    adt.obsm["spatial"] = rna.obsm["spatial"].copy()
    rna.var["feature_types"] = "Gene Expression"
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.MuData({"rna": rna, "adt": adt})
    mdata.obs["ground_truth"] = rna.obs["ground_truth"].to_numpy()
    mdata.obsm["spatial"] = rna.obsm["spatial"].copy()
    mdata.uns["simulation"] = {**rna.uns["simulation"], "kind": "paired cells", "n_proteins": n_proteins,
                               "protein_fold_change": protein_fold_change}
    return mdata


def _jittered_lattice(n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """``n_cells`` irregular positions in µm: a square lattice, each point moved up to 0.4 spacings each way."""
    side = int(np.ceil(np.sqrt(n_cells)))
    row, col = np.divmod(np.arange(n_cells), side)
    lattice = np.stack([col, row], axis=1).astype(np.float64)
    return (lattice + rng.uniform(-0.4, 0.4, size=lattice.shape)) * CELL_SPACING_UM


def _warped_patches(coordinates: np.ndarray, n_domains: int, rng: np.random.Generator) -> np.ndarray:
    """Niche of each cell: nearest of ``3 · n_domains`` seed points (each niche owns three), after a smooth warp
    of the plane that makes the patch boundaries curve; every niche keeps at least some cells."""
    from scipy.spatial import cKDTree

    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    span = np.maximum(high - low, 1e-9)
    unit = (coordinates - low) / span
    for _ in range(100):
        seeds = rng.uniform(0.05, 0.95, size=(3 * n_domains, 2))
        owner = rng.permutation(np.arange(3 * n_domains) % n_domains)
        phase = rng.uniform(0, 2 * np.pi, size=4)
        warped = unit + 0.06 * np.stack([np.sin(2 * np.pi * 1.5 * unit[:, 1] + phase[0]) +
                                         np.sin(2 * np.pi * 3.0 * unit[:, 1] + phase[1]),
                                         np.sin(2 * np.pi * 1.5 * unit[:, 0] + phase[2]) +
                                         np.sin(2 * np.pi * 3.0 * unit[:, 0] + phase[3])], axis=1)
        niche = owner[cKDTree(seeds).query(warped)[1]]
        if np.bincount(niche, minlength=n_domains).min() >= max(10, len(niche) // (20 * n_domains)):
            return niche
    raise RuntimeError("could not draw niches that each hold cells; use fewer n_domains")


def _niche_mixtures(n_domains: int, n_cell_types: int, concentration: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Cell-type proportions per niche (n_domains × n_cell_types), every pair of niches at least a total-
    variation distance of 1/3 apart, so that the niches are there to be found."""
    for _ in range(1000):
        proportions = rng.dirichlet(np.full(n_cell_types, concentration), size=n_domains)
        distance = 0.5 * np.abs(proportions[:, None, :] - proportions[None, :, :]).sum(axis=2)
        if distance[np.triu_indices(n_domains, 1)].min() >= 1 / 3:
            return proportions
    raise InputError(f"could not draw {n_domains} distinct niche mixtures of {n_cell_types} cell types: give more "
                     "n_cell_types or a lower mixture_concentration")


def _draw_categories(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row of ``probabilities`` (rows × categories), drawn by inverse CDF."""
    cumulative = np.cumsum(probabilities, axis=1)
    draws = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((draws > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _type_profiles(n_cell_types: int, n_genes: int, fold_change: float, rng: np.random.Generator) -> np.ndarray:
    """Each type's relative expression (n_cell_types × n_genes, rows sum to 1): a shared log-normal baseline,
    a few mild differences, and the type's own marker genes (an equal share of the panel's first half)."""
    log_rates = np.tile(rng.normal(0.0, 1.0, size=n_genes), (n_cell_types, 1))
    log_rates += rng.normal(0.0, 0.2, size=log_rates.shape)
    markers = np.array_split(rng.permutation(n_genes // 2), n_cell_types)
    for cell_type, genes in enumerate(markers):
        log_rates[cell_type, genes] += np.log(fold_change)
    rates = np.exp(log_rates)
    return rates / rates.sum(axis=1, keepdims=True)


def _sample_transcripts(cell_type: np.ndarray, totals: np.ndarray, profiles: np.ndarray,
                        rng: np.random.Generator) -> sp.csr_matrix:
    """Counts (cells × genes, CSR): each cell's transcripts drawn one by one from its type's profile, a chunk
    of cells at a time, so memory follows the transcripts of one chunk rather than cells × genes."""
    n_genes = profiles.shape[1]
    cumulative = np.cumsum(profiles, axis=1)
    cumulative[:, -1] = 1.0
    chunks = []
    for start in range(0, len(totals), _CELLS_PER_CHUNK):
        stop = min(start + _CELLS_PER_CHUNK, len(totals))
        per_cell = totals[start:stop]
        cells = np.repeat(np.arange(stop - start), per_cell)
        types = cell_type[start:stop][cells]
        genes = np.empty(len(cells), dtype=np.int64)
        uniform = rng.random(len(cells))
        for t in np.unique(types):
            which = types == t
            genes[which] = np.searchsorted(cumulative[t], uniform[which], side="right")
        chunk = sp.csr_matrix((np.ones(len(cells), dtype=np.float32), (cells, genes)),
                              shape=(stop - start, n_genes))
        chunk.sum_duplicates()
        chunks.append(chunk)
    return sp.vstack(chunks, format="csr")


#: What each simulated modality measures: number of features and the modality's kind.
PAIRED_FEATURES = {"rna": 500, "adt": 30, "atac": 3000}


def simulate_multiomics(
    n_spots: int = 1300,
    n_domains: int = 5,
    *,
    second: str = "adt",
    seed: int = 0,
    fold_change: float = 3.0,
):
    """Simulate paired spatial omics on one section: RNA plus protein (``second='adt'``) or chromatin
    accessibility (``'atac'``), on the same spots, with ``n_domains`` layered domains as in
    :func:`simulate_visium`.

    Neither modality sees every domain on its own: RNA markers tell apart the domain pairs {1, 2}, {3, 4}, …
    (domain d has RNA group ⌊d/2⌋) and the second modality tells apart even from odd domains, so only the two
    together identify each domain. RNA and protein counts are negative binomial (proteins with a large
    background, as antibody capture has); ATAC counts are sparse Poisson peak counts, group peaks opening
    ``fold_change``-fold.

    Returns a MuData with modalities ``'rna'`` and ``second`` (raw counts in ``X``, coordinates in
    ``obsm['spatial']``, the truth in ``obs['ground_truth']``), and the truth and coordinates also at its top level.
    """
    import mudata

    if second not in ("adt", "atac"):
        raise InputError(f"second must be 'adt' or 'atac', got '{second}'")
    if not 2 <= n_domains <= 12:
        raise InputError(f"n_domains must be between 2 and 12, got {n_domains}")
    if n_spots < 50:
        raise InputError(f"n_spots must be at least 50, got {n_spots}")
    rng = np.random.default_rng(seed)
    coordinates, _, _ = _hex_grid(n_spots)
    curve = _LayerCurve.draw(coordinates, rng)
    position = curve.position(coordinates)
    domain = np.searchsorted(_layer_boundaries(position, n_domains, rng), position)
    names = np.array([f"D{i + 1}" for i in range(n_domains)])
    truth = pd.Categorical(names[domain], categories=names)
    spots = pd.Index([f"spot{i:05d}" for i in range(len(domain))])

    rna = _group_counts(domain // 2, PAIRED_FEATURES["rna"], rng, fold_change=fold_change, base_sd=1.0,
                        library=rng.lognormal(np.log(1500), 0.3, len(domain)), dispersion=5.0)
    if second == "adt":
        other = _group_counts(domain % 2, PAIRED_FEATURES["adt"], rng, fold_change=fold_change, base_sd=0.5,
                              library=rng.lognormal(np.log(800), 0.3, len(domain)), dispersion=10.0)
        prefix = "protein"
    else:
        rates = _group_rates(domain % 2, PAIRED_FEATURES["atac"], rng, fold_change=fold_change, base_sd=0.8)
        other = rng.poisson(rates * rng.lognormal(np.log(0.05), 0.3, len(domain))[:, None]
                            * PAIRED_FEATURES["atac"] / rates.sum(axis=1, keepdims=True)).astype(np.float32)
        prefix = "peak"
    modalities = {}
    feature_types = {"rna": "Gene Expression", "adt": "Antibody Capture", "atac": "Peaks"}
    for kind, counts, feature in (("rna", rna, "gene"), (second, other, prefix)):
        var = pd.DataFrame({"feature_types": feature_types[kind]},
                           index=[f"{feature}{j:05d}" for j in range(counts.shape[1])])
        part = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame({"ground_truth": truth}, index=spots), var=var)
        part.obsm["spatial"] = coordinates.copy()
        modalities[kind] = part
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.MuData(modalities)
    mdata.obs["ground_truth"] = truth
    mdata.obsm["spatial"] = coordinates.copy()
    mdata.uns["simulation"] = {"seed": seed, "second": second, "fold_change": fold_change,
                               "rna_groups": "domain // 2", "second_groups": "domain % 2"}
    return mdata


def _group_rates(group: np.ndarray, n_features: int, rng: np.random.Generator, *, fold_change: float,
                 base_sd: float) -> np.ndarray:
    """Relative feature rates per spot: a random baseline, with a tenth of the features marking each group."""
    n_groups = int(group.max()) + 1
    log_rates = np.tile(rng.normal(0.0, base_sd, n_features), (n_groups, 1))
    markers = rng.permutation(n_features)[: n_groups * max(1, n_features // 10)].reshape(n_groups, -1)
    for g in range(n_groups):
        log_rates[g, markers[g]] += np.log(fold_change)
    return np.exp(log_rates)[group]


def _group_counts(group: np.ndarray, n_features: int, rng: np.random.Generator, *, fold_change: float,
                  base_sd: float, library: np.ndarray, dispersion: float) -> np.ndarray:
    """Negative-binomial counts with group-specific marker features and per-spot library sizes."""
    rates = _group_rates(group, n_features, rng, fold_change=fold_change, base_sd=base_sd)
    mean = rates / rates.sum(axis=1, keepdims=True) * library[:, None]
    return rng.poisson(rng.gamma(shape=dispersion, scale=mean / dispersion)).astype(np.float32)
