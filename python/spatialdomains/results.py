"""A sample's output folder, written the same by every command that writes one (``run``, ``report``, each sample of
a ``batch``): :func:`write_sample` is the only writer of these files.

========================  =================================================================================
``domains.csv``           barcode, domain (and ``domain_unrefined`` when refined), x, y
``embedding.csv``         the method's embedding, one column per dimension (when a method found the domains)
``domains.png``           the domains on the tissue (the first slice of several)
``provenance.json``       parameters, seeds, versions, timings
``result.h5ad``           the AnnData with every result (``result.h5mu`` for paired omics)
``result.rds``            an .rds input's class with the results added
``result.zarr``           a SpatialData input's store, with the results added to the table read
``clusters.csv``          10x inputs: the domains as Loupe Browser or Xenium Explorer import them
``attention.png``         methods with modality attention: each modality's weight per spot
``markers.csv``,          a report's marker genes and GO terms of each domain
``go_enrichment.csv``
========================  =================================================================================

Each file is written atomically; the folder itself is staged by :class:`spatialdomains.outputs.Output`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FILES = {"domains": "domains.csv", "embedding": "embedding.csv", "map": "domains.png",
         "provenance": "provenance.json", "result": "result.h5ad", "multiomics": "result.h5mu",
         "rds": "result.rds", "store": "result.zarr", "clusters": "clusters.csv", "attention": "attention.png", "markers": "markers.csv",
         "go": "go_enrichment.csv", "umap": "umap.png"}
DOMAIN_KEY = "domain"


def write_sample(folder: str | Path, result, record: dict, *, method: str | None, embedding_key: str | None = None,
                 slice_key: str | None = None, tables: dict[str, pd.DataFrame] | None = None) -> list[str]:
    """Write one sample's files into ``folder`` (created) and return their names, in a fixed order.

    ``result`` holds the domains in ``obs['domain']`` (an AnnData, or a MuData of paired omics); ``method`` the
    registered method that found them (None: they were given); ``embedding_key`` its embedding (default
    ``X_<method>``); ``slice_key`` the ``obs`` column of the slices when ``result`` holds several (the map shows the
    first); ``tables`` a report's ``markers`` and ``go`` tables.
    """
    import matplotlib.pyplot as plt

    from . import io, methods, pl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = methods.get(method) if method is not None else None
    written = [FILES["domains"]]
    io.write_csv(domain_table(result), folder / FILES["domains"], index_label="barcode")
    embedding_key = embedding_key or (spec.default_key if spec else None)
    if embedding_key is not None and embedding_key in result.obsm:
        io.write_csv(embedding_table(result, embedding_key, spec.title), folder / FILES["embedding"],
                     index_label="barcode")
        written.append(FILES["embedding"])
    plt.close(_domain_map(result, folder / FILES["map"], spec, slice_key))
    written.append(FILES["map"])
    if io.platform(result) is not None:  # 10x data: the domains for Loupe Browser or Xenium Explorer
        io.write_clusters(result, folder / io.CLUSTERS_FILE, DOMAIN_KEY)
        written.append(io.CLUSTERS_FILE)
    if spec is not None and spec.attention:
        plt.close(pl.attention(result, key=f"{spec.name}_attention", save=folder / FILES["attention"]))
        written.append(FILES["attention"])
    for name, table in (tables or {}).items():
        io.write_csv(table, folder / FILES[name], index=False)
        written.append(FILES[name])
    io.write_json(record, folder / FILES["provenance"])
    written.append(FILES["provenance"])
    if hasattr(result, "mod"):  # a MuData (paired omics)
        io.write_h5mu(result, folder / FILES["multiomics"])
        written.append(FILES["multiomics"])
    else:
        io.write_h5ad(result, folder / FILES["result"])
        written.append(FILES["result"])
    if "rds" in result.uns:  # an .rds input gets its results back as the same R class too
        io.write_rds(result, folder / FILES["rds"])
        written.append(FILES["rds"])
    if io.STORE_SOURCE_KEY in result.uns:  # a SpatialData input: a new store, the results in the table read
        io.write_spatialdata(result, folder / FILES["store"])
        written.append(FILES["store"])
    return written


def write_joint(folder: str | Path, combined, record: dict, *, method: str, slice_key: str) -> list[str]:
    """The combined result of several slices integrated together (``joint/``): its UMAP coloured by slice and by
    domain, the domains and embedding (without coordinates: each slice has its own frame), provenance and result."""
    import matplotlib.pyplot as plt

    from . import io, methods, pl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = methods.get(method)
    plt.close(pl.embedding(combined, "X_umap", [slice_key, DOMAIN_KEY], save=folder / FILES["umap"]))
    io.write_csv(domain_table(combined, with_coordinates=False), folder / FILES["domains"], index_label="barcode")
    io.write_csv(embedding_table(combined, spec.default_key, spec.title), folder / FILES["embedding"],
                 index_label="barcode")
    io.write_json(record, folder / FILES["provenance"])
    io.write_h5ad(combined, folder / FILES["result"])
    return [FILES[name] for name in ("umap", "domains", "embedding", "provenance", "result")]


def domain_table(result, *, with_coordinates: bool = True) -> pd.DataFrame:
    """``domains.csv``: the domains (refined and not, when refined) and each spot's x, y (NaN where left out)."""
    columns = [c for c in (DOMAIN_KEY, f"{DOMAIN_KEY}_unrefined") if c in result.obs]
    table = result.obs[columns].copy()
    if with_coordinates:
        table[["x", "y"]] = np.asarray(result.obsm["spatial"], dtype=np.float64)[:, :2]
    return table


def embedding_table(result, key: str, prefix: str) -> pd.DataFrame:
    """``embedding.csv``: one column per dimension of ``obsm[key]``, named ``<method title>_1`` ..."""
    values = np.asarray(result.obsm[key])
    return pd.DataFrame(values, index=result.obs_names,
                        columns=[f"{prefix}_{i + 1}" for i in range(values.shape[1])])


def _domain_map(result, path: Path, spec, slice_key: str | None):
    """The domains on the tissue, titled with their number and the method; the first slice of several."""
    from . import pl
    from .slices import split

    name, part = None, result
    if slice_key is not None and slice_key in result.obs and result.obs[slice_key].nunique() > 1:
        name, part = split(result, slice_key)[0]
    found = "given" if spec is None else f"{spec.title}"
    title = f"{result.obs[DOMAIN_KEY].cat.categories.size} domains ({found})" + (f", slice {name}" if name else "")
    return pl.domains(part, DOMAIN_KEY, title=title, save=path)
