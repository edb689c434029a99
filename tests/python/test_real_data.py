"""Every method on the shared real data, a few epochs each: shapes, provenance and determinism (seconds each).
How well they find domains is measured by ``make accuracy`` (benchmark scripts and tests/python/test_accuracy.py).
"""
import anndata as ad
import numpy as np
import pytest

import spatialdomains as sd
from conftest import shared_file

SHORT = {"n_epochs": 5, "progress": False}


@pytest.fixture(scope="module")
def dlpfc():
    return ad.read_h5ad(shared_file("data/dlpfc_151673/dlpfc_151673.h5ad"))


@pytest.mark.parametrize("method, n_genes", [("staig", 3000), ("spotscape", 5000)])
def test_dlpfc_151673_short_runs_are_reproducible_and_recorded(dlpfc, method, n_genes):
    first, second = dlpfc.copy(), dlpfc.copy()
    for adata in (first, second):  # one thread count for both: the automatic count follows the machine's load,
        # and floating-point sums in another order give other bits
        sd.find_domains(adata, method, 7, cluster_method="kmeans", random_state=3, n_threads=2, **SHORT)
    key = f"X_{method}"
    assert first.obsm[key].shape == (dlpfc.n_obs, 64) and np.isfinite(first.obsm[key]).all()
    np.testing.assert_array_equal(first.obsm[key], second.obsm[key])
    assert first.obs["domain"].equals(second.obs["domain"])
    record = first.uns["spatialdomains"]
    assert record[method]["training"]["epochs_run"] == 5 and record[method]["random_state"] == 3
    assert len(record[method]["genes"]) == n_genes and record[method]["n_spots_used"] == dlpfc.n_obs
    assert record["cluster"]["n_domains"] == 7 and record["cluster"]["random_state"] == 3
    assert {"preprocess", "graph", "train"} <= set(record[method]["timings"])
    assert "torch" in record[method]["versions"]
    assert "X_staig" not in dlpfc.obsm and "domain" not in dlpfc.obs


@pytest.mark.parametrize("method, params", [("staig", {}), ("spotscape", {"graph": "knn"})])
def test_starmap_three_sections_short_integration(method, params):
    adata = ad.read_h5ad(shared_file("data/starmap_mpfc/starmap_mpfc.h5ad"))
    slices = {name: adata[(adata.obs["slice_id"] == name).to_numpy()].copy() for name in ("BZ5", "BZ9", "BZ14")}
    combined = sd.find_domains(slices, method, 4, cluster_method="kmeans", **SHORT, **params)
    record = combined.uns["spatialdomains"][method]
    assert list(record["slices"]) == ["BZ5", "BZ9", "BZ14"] and record["batch_key"] == "slice"
    assert int(record["training"]["n_slices"]) == 3
    for name, one in slices.items():
        assert one.obsm[f"X_{method}"].shape == (one.n_obs, 64) and one.obs["domain"].notna().all()
        assert one.uns["spatialdomains"]["slice"] == name


def test_sim_multiomics_rna_adt_short_run_is_reproducible():
    folder = "data/sim_multiomics_rna_adt"
    modal = {"rna": ad.read_h5ad(shared_file(f"{folder}/adata_RNA.h5ad")),
             "adt": ad.read_h5ad(shared_file(f"{folder}/adata_ADT.h5ad"))}
    first = sd.find_domains(modal, method="spami", n_domains=5, cluster_method="kmeans", n_epochs=20, progress=False)
    second = sd.tl.spami(modal, n_epochs=20, progress=False)
    np.testing.assert_array_equal(first.obsm["X_spami"], second.obsm["X_spami"])
    assert first.obsm["spami_attention"].shape == (first.n_obs, 2)
    record = first.uns["spatialdomains"]["spami"]
    assert list(record["kinds"]) == ["rna", "adt"] and record["parameters"]["balance"]


def test_lymph_node_protein_only_short_run():
    adt = ad.read_h5ad(shared_file("data/human_lymph_node_A1_adt_only/hln_A1_adt.h5ad"))
    result = sd.find_domains(adt, method="spami", n_domains=10, cluster_method="kmeans", n_epochs=10, progress=False)
    assert result is adt and list(adt.uns["spatialdomains"]["spami"]["kinds"]) == ["adt"]
    assert adt.obs["domain"].cat.categories.size == 10


def test_dlpfc_151673_coordinates_are_0_73_micrometres_per_pixel():
    """Its array neighbours are about 137 full-resolution pixels apart, which is 100 µm by design (the scale
    factors' 55 µm spot over spot_diameter_fullres gave 0.571, 21 % short)."""
    adata = ad.read_h5ad(shared_file("data/dlpfc_151673/dlpfc_151673.h5ad"))
    assert sd.io.coordinate_unit_um(adata) == pytest.approx(0.726, abs=0.002)
