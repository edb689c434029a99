"""Marker genes per domain (Wilcoxon): planted programs found, percentages and thresholds right, input guarded."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from spatialdomains.analysis import markers, top_markers
from spatialdomains.errors import InputError


@pytest.fixture(scope="module")
def labelled():
    adata = sd.datasets.simulate_visium(900, 4, seed=5)
    adata.obs["domain"] = adata.obs["ground_truth"]
    return adata


def test_planted_programs_are_the_top_markers(labelled):
    adata = labelled.copy()
    table = markers(adata)
    assert list(table.columns) == ["domain", "gene", "symbol", "gene_id", "score", "log2fc", "pvalue", "padj",
                                   "pct_in", "pct_out", "significant"]
    assert table["gene_id"].str.startswith("ENSG").mean() > 0.9  # var['gene_ids'], as Space Ranger gives them
    assert len(table) == 4 * adata.n_vars
    planted = dict(zip(adata.uns["simulation"]["domains"], adata.uns["simulation"]["go_id"]))
    top = top_markers(table, 10)
    for domain, program in planted.items():
        genes = top.loc[top["domain"] == domain, "gene"]
        assert (adata.var.loc[genes, "program"] == program).mean() >= 0.8, domain
    assert adata.uns["markers"] is table
    assert adata.uns["spatialdomains"]["markers"]["normalised_here"]


def test_percentages_and_thresholds_by_hand(labelled):
    adata = labelled.copy()
    table = markers(adata, min_log2fc=1.0, max_pvalue=0.01)
    row = table[(table["domain"] == "D2")].iloc[0]
    inside = (adata.obs["domain"] == "D2").to_numpy()
    expressed = (adata[:, row["gene"]].X.toarray().ravel() > 0)
    assert row["pct_in"] == pytest.approx(expressed[inside].mean())
    assert row["pct_out"] == pytest.approx(expressed[~inside].mean())
    expected = (table["log2fc"].abs() > 1.0) & (table["padj"] < 0.01)
    assert (table["significant"] == expected).all()
    assert table["significant"].any() and not table["significant"].all()


@pytest.fixture(scope="module")
def weak_marker():
    """Two domains of 60 spots, 200 null genes but for g0 (weakly up in A: raw p < 0.05, adjusted p ≥ 0.05)
    and g1 (strongly up in A)."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(5, size=(120, 200)).astype(np.float32)
    counts[:60, 0] = rng.poisson(6.5, size=60)
    counts[:60, 1] = rng.poisson(20, size=60)
    obs = pd.DataFrame({"domain": pd.Categorical(["A"] * 60 + ["B"] * 60)}, index=[f"s{i}" for i in range(120)])
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(200)]))


def test_raw_pvalue_filter_keeps_what_adjustment_drops(weak_marker):
    adata = weak_marker.copy()
    adjusted = markers(adata).set_index(["domain", "gene"])
    assert adata.uns["spatialdomains"]["markers"]["pvalue"] == "adjusted"
    raw = markers(adata, pvalue="raw").set_index(["domain", "gene"])
    record = adata.uns["spatialdomains"]["markers"]
    assert (record["pvalue"], record["max_pvalue"]) == ("raw", 0.05)
    weak, strong = adjusted.loc[("A", "g0")], adjusted.loc[("A", "g1")]
    assert weak["pvalue"] < 0.05 <= weak["padj"] and weak["log2fc"] > 0.25
    assert raw.loc[("A", "g0"), "significant"] and not weak["significant"]
    assert raw.loc[("A", "g1"), "significant"] and strong["significant"]
    gap = (raw["pvalue"] < 0.05) & (raw["padj"] >= 0.05) & (raw["log2fc"].abs() > 0.25)
    assert (raw["significant"] == ((raw["log2fc"].abs() > 0.25) & (raw["pvalue"] < 0.05))).all()
    assert raw.loc[gap, "significant"].all() and not adjusted.loc[gap[gap].index, "significant"].any()


def test_volcano_draws_the_chosen_p(weak_marker):
    import matplotlib.pyplot as plt

    table = markers(weak_marker.copy(), pvalue="raw", max_pvalue=0.01, key_added=None)
    figure = sd.pl.volcano(table, pvalue="raw", max_pvalue=0.01)
    ax = figure.axes[0]
    assert ax.get_ylabel() == "−log10 raw p"
    assert any(np.allclose(line.get_ydata(), 2.0) for line in ax.get_lines())
    plt.close(figure)
    with pytest.raises(InputError, match="adjusted, raw"):
        sd.pl.volcano(table, pvalue="fdr")


def test_log_normalised_input_is_used_as_given(labelled):
    raw = labelled.copy()
    normalised = labelled.copy()
    normalised.X = sd.pp.log_normalise(normalised.X)
    from_raw = markers(raw, key_added=None)
    from_log = markers(normalised, key_added=None)
    pd.testing.assert_frame_equal(from_raw, from_log)
    assert "markers" not in normalised.uns


def test_spots_without_domain_are_left_out_and_domain_order_kept(labelled):
    adata = labelled.copy()
    order = ["D3", "D1", "D2", "D4"]
    adata.obs["domain"] = pd.Categorical(adata.obs["domain"].astype(str), categories=order)
    adata.obs.loc[adata.obs_names[:50], "domain"] = np.nan
    table = markers(adata, key_added=None)
    assert list(table["domain"].cat.categories) == order
    row = table[(table["domain"] == "D1")].iloc[0]
    kept = adata.obs["domain"].notna().to_numpy()
    inside = (adata.obs["domain"] == "D1").to_numpy()[kept]
    expressed = adata[kept, row["gene"]].X.toarray().ravel() > 0
    assert row["pct_out"] == pytest.approx(expressed[~inside].mean())


def test_symbols_come_from_var(labelled):
    adata = labelled.copy()
    adata.var["gene_name"] = [f"sym{i}" for i in range(adata.n_vars)]
    table = markers(adata, key_added=None)
    first = table.iloc[0]
    assert first["symbol"] == adata.var.loc[first["gene"], "gene_name"]


def test_marker_table_survives_h5ad(labelled, tmp_path):
    adata = labelled.copy()
    markers(adata)
    adata.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    assert len(back.uns["markers"]) == len(adata.uns["markers"])


def test_bad_input_is_named(labelled):
    adata = labelled.copy()
    with pytest.raises(InputError, match="obs\\['cluster'\\] does not exist"):
        markers(adata, "cluster")
    adata.obs["one"] = "x"
    with pytest.raises(InputError, match="fewer than two domains"):
        markers(adata, "one")
    with pytest.raises(InputError, match="pvalue must be one of adjusted, raw, not 'fdr'"):
        markers(adata, pvalue="fdr")
    with pytest.raises(InputError, match="layer 'counts' does not exist"):
        markers(adata, layer="counts")
    adata.X = sp.csr_matrix(-np.abs(adata.X.toarray()) - 1)
    with pytest.raises(InputError, match="negative"):
        markers(adata)
