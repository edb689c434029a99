"""Gene-set annotations for enrichment: GO from Bioconductor's OrgDb/GO.db databases, or any GMT file.

GO annotations are read straight from the SQLite files inside the installed R packages (org.Hs.eg.db, GO.db, and
org.Mm.eg.db etc. when installed), exactly as clusterProfiler's ``enrichGO`` sees them: the OrgDb's ``GOALL`` tables
(every evidence code, annotations already propagated to all ancestor terms), restricted to the terms GO.db lists for
the ontology, keyed by the chosen gene-ID type. Reading them takes seconds, so each table is cached on disk.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import atomic_path, logger
from ..errors import InputError

#: Species names accepted by ``species=`` and the Bioconductor OrgDb package holding their annotation.
ORG_PACKAGES = {
    "human": "org.Hs.eg.db", "mouse": "org.Mm.eg.db", "rat": "org.Rn.eg.db",
    "zebrafish": "org.Dr.eg.db", "fly": "org.Dm.eg.db",
}
#: Gene-ID types (clusterProfiler's ``keyType`` names) and the OrgDb table and column holding them.
KEY_TYPES = {"ENTREZID": ("genes", "gene_id"), "SYMBOL": ("gene_info", "symbol"), "ENSEMBL": ("ensembl", "ensembl_id")}
ONTOLOGIES = ("BP", "MF", "CC")
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*G\d+)\.\d+$")


@dataclass(frozen=True)
class GeneSets:
    """Term → gene pairs with term names, and where they came from (recorded in reports)."""

    pairs: pd.DataFrame  # columns 'term', 'gene' (unique pairs)
    names: pd.Series  # term ID → description
    source: str
    key_type: str | None = None

    @property
    def genes(self) -> pd.Index:
        """Every gene with at least one annotation (clusterProfiler's default universe)."""
        return pd.Index(self.pairs["gene"].unique())


def strip_ensembl_versions(genes) -> np.ndarray:
    """'ENSG00000197971.15' → 'ENSG00000197971'; other IDs unchanged."""
    return np.array([_ENSEMBL_VERSION.sub(r"\1", str(g)) for g in genes], dtype=object)


def read_gmt(path: str | os.PathLike) -> GeneSets:
    """Gene sets from a GMT file (one set per line: name, description, genes…, tab-separated); any species."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gene_sets: GMT file '{path}' does not exist")
    terms, genes, names = [], [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 3:
            raise InputError(f"{path}:{number}: a GMT line needs a name, a description and at least one gene, "
                             "separated by tabs")
        term = fields[0].strip()
        members = [g.strip() for g in fields[2:] if g.strip()]
        names[term] = fields[1].strip() or term
        terms.extend([term] * len(members))
        genes.extend(members)
    if not terms:
        raise InputError(f"gene_sets: GMT file '{path}' holds no gene sets")
    pairs = pd.DataFrame({"term": terms, "gene": genes}).drop_duplicates(ignore_index=True)
    return GeneSets(pairs=pairs, names=pd.Series(names, name="Description"), source=f"GMT file {path.name}")


def go_gene_sets(ontology: str = "BP", *, key_type: str = "ENTREZID", species: str = "human",
                 org_db: str | os.PathLike | None = None, go_db: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> GeneSets:
    """GO gene sets (GOALL: propagated to ancestors) of one ontology, keyed by ``key_type``.

    ``org_db``/``go_db`` name an OrgDb package or its ``.sqlite`` file; by default the OrgDb for ``species`` and
    GO.db, located through ``Rscript``. The table is cached under ``cache_dir`` (default
    ``$SPATIALDOMAINS_CACHE`` or ``~/.cache/spatialdomains``), keyed by the database files' size and time.
    """
    ontology = ontology.upper()
    if ontology not in ONTOLOGIES:
        raise InputError(f"ontology must be one of {', '.join(ONTOLOGIES)}, not '{ontology}'")
    if key_type not in KEY_TYPES:
        raise InputError(f"key_type must be one of {', '.join(KEY_TYPES)}, not '{key_type}'")
    org_path = _database_file(org_db if org_db is not None else _org_package(species))
    go_path = _database_file(go_db if go_db is not None else "GO.db")
    return _cached_go_sets(str(org_path), str(go_path), ontology, key_type,
                           str(Path(cache_dir) if cache_dir else _default_cache_dir()))


def org_keys(key_type: str, *, species: str = "human", org_db: str | os.PathLike | None = None) -> pd.Index:
    """All IDs of one type in an OrgDb (annotated or not): the reference for ID-type detection."""
    org_path = _database_file(org_db if org_db is not None else _org_package(species))
    return _org_keys(str(org_path), key_type)


def detect_key_type(genes, *, species: str = "human", org_db: str | os.PathLike | None = None,
                    min_fraction: float = 0.5) -> str:
    """The gene-ID type ('SYMBOL', 'ENSEMBL', 'ENTREZID') that matches most of ``genes`` in the OrgDb.

    Raises when none matches at least ``min_fraction`` of them, naming what was tried and example IDs.
    """
    genes = pd.Index(strip_ensembl_versions(genes)).unique()
    if len(genes) == 0:
        raise InputError("no genes given to detect their ID type from")
    fractions = {kt: float(genes.isin(org_keys(kt, species=species, org_db=org_db)).mean()) for kt in KEY_TYPES}
    best = max(fractions, key=fractions.get)
    if fractions[best] < min_fraction:
        tried = ", ".join(f"{kt} {100 * f:.0f}%" for kt, f in fractions.items())
        raise InputError(
            f"could not tell the gene-ID type: matches in the {species} OrgDb were {tried} "
            f"(example genes: {', '.join(map(str, genes[:5]))}). Pass key_type= and species= (or org_db=), "
            "or give gene sets as a GMT file")
    return best


def detect_species(genes) -> str:
    """'human' or 'mouse' from the gene IDs' form (Ensembl prefix, symbol case); 'human' when undecided."""
    genes = [str(g) for g in genes[:2000]]
    if sum(g.startswith("ENSMUSG") for g in genes) > len(genes) / 2:
        return "mouse"
    if sum(g.startswith("ENSG") for g in genes) > len(genes) / 2:
        return "human"
    letters = [g for g in genes if re.match(r"^[A-Za-z][A-Za-z0-9-]+$", g)]
    mouse_like = sum(g[0].isupper() and g[1:] != g[1:].upper() for g in letters)
    return "mouse" if letters and mouse_like > len(letters) / 2 else "human"


def gene_symbols(genes, *, species: str = "auto", org_db: str | os.PathLike | None = None) -> pd.Series:
    """The symbol of each gene (indexed by the genes as given), for Ensembl or Entrez IDs, from the species' OrgDb.

    Genes that are already symbols, IDs the OrgDb does not know, and every gene when no OrgDb is installed keep
    their own name: symbols are for reading, never a reason to fail.
    """
    genes = pd.Index([str(g) for g in genes])
    stripped = strip_ensembl_versions(genes)
    sample = stripped[:2000]
    if sum(str(g).startswith("ENS") for g in sample) > len(sample) / 2:
        key_type = "ENSEMBL"
    elif sum(str(g).isdigit() for g in sample) > len(sample) / 2:
        key_type = "ENTREZID"
    else:
        return pd.Series(genes.to_numpy(), index=genes)
    try:
        org_path = _database_file(org_db if org_db is not None else
                                  _org_package(detect_species(genes) if species == "auto" else species))
    except InputError as error:
        logger.info("gene symbols not looked up (%s)", str(error).split(":")[0])
        return pd.Series(genes.to_numpy(), index=genes)
    symbol_of = _id_symbols(str(org_path), key_type)
    return pd.Series([symbol_of.get(key, gene) for gene, key in zip(genes, stripped)], index=genes)


def clear_memory_cache() -> None:
    """Forget annotation tables held in memory (the on-disk cache stays)."""
    _cached_go_sets.cache_clear()
    _id_symbols.cache_clear()
    _org_keys.cache_clear()
    _database_file.cache_clear()


# ---------------------------------------------------------------------------------------------------------------


def _org_package(species: str) -> str:
    if species not in ORG_PACKAGES:
        raise InputError(f"species '{species}' is not known: use one of {', '.join(ORG_PACKAGES)}, "
                         "pass org_db= (an OrgDb package or .sqlite file), or give a GMT file")
    return ORG_PACKAGES[species]


@functools.lru_cache(maxsize=None)
def _database_file(source) -> Path:
    """The SQLite file of an annotation package (name like 'org.Hs.eg.db') or a path given directly."""
    source = str(source)
    if source.endswith(".sqlite"):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"annotation database '{path}' does not exist")
        return path
    file_name = source.removesuffix(".db") + ".sqlite"
    expression = f'cat(system.file("extdata", "{file_name}", package = "{source}"))'
    try:
        found = subprocess.run(["Rscript", "--vanilla", "-e", expression], capture_output=True, text=True,
                               timeout=120).stdout.strip()
    except FileNotFoundError:
        found = ""
    if not found:
        raise InputError(
            f"the R annotation package {source} is not installed (or R is missing): install it "
            f"(Debian: apt-get install r-bioc-{source.lower()}; elsewhere BiocManager::install('{source}')), "
            "pass its .sqlite file, or give gene sets as a GMT file")
    return Path(found)


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@functools.lru_cache(maxsize=None)
def _org_keys(org_path: str, key_type: str) -> pd.Index:
    table, column = KEY_TYPES[key_type]
    with contextlib.closing(_connect(org_path)) as connection:
        values = [row[0] for row in connection.execute(f"SELECT DISTINCT {column} FROM {table}")]
    return pd.Index(values)


@functools.lru_cache(maxsize=None)
def _id_symbols(org_path: str, key_type: str) -> dict[str, str]:
    """ID → symbol from an OrgDb (the alphabetically first symbol where an ID has several)."""
    table, column = KEY_TYPES[key_type]
    query = (f"SELECT t.{column}, MIN(i.symbol) FROM {table} t JOIN gene_info i ON t._id = i._id "
             f"GROUP BY t.{column}")
    with contextlib.closing(_connect(org_path)) as connection:
        return dict(connection.execute(query).fetchall())


@functools.lru_cache(maxsize=8)
def _cached_go_sets(org_path: str, go_path: str, ontology: str, key_type: str, cache_dir: str) -> GeneSets:
    stamp = "|".join(f"{p}:{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in (org_path, go_path))
    digest = hashlib.sha1(f"{stamp}|{ontology}|{key_type}".encode()).hexdigest()[:16]
    cache_file = Path(cache_dir) / f"go_{Path(org_path).stem}_{ontology}_{key_type}_{digest}.npz"
    source = f"{Path(org_path).stem}.db GOALL ({ontology}, {key_type}) with {Path(go_path).stem}.db term names"
    if cache_file.is_file():
        stored = np.load(cache_file, allow_pickle=False)
        pairs = pd.DataFrame({"term": stored["terms"][stored["term_codes"]],
                              "gene": stored["genes"][stored["gene_codes"]]})
        names = pd.Series(stored["names"], index=stored["terms"], name="Description")
        return GeneSets(pairs=pairs, names=names, source=source, key_type=key_type)
    logger.info("reading GO %s annotations (%s) from %s; cached for next time", ontology, key_type, org_path)
    table, column = KEY_TYPES[key_type]
    with contextlib.closing(_connect(org_path)) as connection:
        pairs = pd.read_sql_query(
            f"SELECT k.{column} AS gene, g.go_id AS term FROM go_{ontology.lower()}_all g "
            f"JOIN {table} k ON g._id = k._id", connection)
    with contextlib.closing(_connect(go_path)) as connection:
        terms = pd.read_sql_query("SELECT go_id, term FROM go_term WHERE ontology = ?", connection,
                                  params=(ontology,))
    pairs = pairs[pairs["term"].isin(terms["go_id"])].drop_duplicates(ignore_index=True)[["term", "gene"]]
    term_codes, term_ids = pd.factorize(pairs["term"], sort=True)
    gene_codes, gene_ids = pd.factorize(pairs["gene"], sort=True)
    names = terms.set_index("go_id")["term"].reindex(term_ids)
    try:
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, terms=np.asarray(term_ids, dtype=str), genes=np.asarray(gene_ids, dtype=str),
                         term_codes=term_codes.astype(np.int32), gene_codes=gene_codes.astype(np.int32),
                         names=names.to_numpy(dtype=str))
    except OSError as error:  # a read-only home still works, only slower next time
        logger.warning("could not cache GO annotations in %s: %s", cache_dir, error)
    return GeneSets(pairs=pairs.reset_index(drop=True), names=pd.Series(names.to_numpy(), index=term_ids,
                                                                        name="Description"),
                    source=source, key_type=key_type)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("SPATIALDOMAINS_CACHE") or Path.home() / ".cache" / "spatialdomains")

