"""Acceptance runs on real and built-in data (minutes on a 2-core CPU)."""
import anndata as ad
import pytest

import spatialdomains as sd
from conftest import r_with_mclust, shared_file

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not r_with_mclust(), reason="the acceptance floor is for mclust EEE: needs R, mclust and rpy2")
def test_dlpfc_151673_gene_mode():
    adata = ad.read_h5ad(shared_file("data/dlpfc_151673/dlpfc_151673.h5ad"))
    sd.find_domains(adata, n_domains=7, cluster_method="mclust", refine=True, progress=False)
    truth = adata.obs["layer_guess_reordered"]
    refined = sd.metrics.ari(truth, adata.obs["domain"])
    unrefined = sd.metrics.ari(truth, adata.obs["domain_unrefined"])
    print(f"\nDLPFC 151673 STAIG (gene mode): ARI {refined:.3f} refined, {unrefined:.3f} unrefined")
    assert refined >= 0.40


def test_demo_recovers_the_planted_domains():
    adata = sd.datasets.simulate_visium(seed=0)
    sd.find_domains(adata, n_domains=5, progress=False)
    score = sd.metrics.ari(adata.obs["ground_truth"], adata.obs["domain"])
    print(f"\nsimulated demo: ARI {score:.3f} ({adata.uns['spatialdomains']['cluster']['backend']})")
    assert score >= 0.8
