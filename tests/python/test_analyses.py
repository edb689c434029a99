"""The analyses beyond domains: pseudotime, slice matching and label transfer, gene selection, choosing the number
of domains by stability. Embeddings come from the smoothed-PCA baseline (no training), so these run in seconds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialdomains as sd
from spatialdomains.errors import InputError


@pytest.fixture(scope="module")
def layered():
    """2,000 spots, 5 layered domains (D1..D5 in layer order), with the baseline embedding."""
    adata = sd.datasets.simulate_visium(n_spots=2000, n_domains=5, seed=0)
    sd.tl.baseline(adata)
    return adata


@pytest.fixture(scope="module")
def two_slices():
    """One simulated tissue split into two slices of different spots; the query rotated by 0.6 rad and shifted.
    Both embedded jointly: PCA of the pooled log-normalised counts, averaged over each spot's 6 nearest spots in
    its own slice."""
    import anndata as ad
    import scanpy as sc

    tissue = sd.datasets.simulate_visium(n_spots=4000, n_domains=5, seed=1)
    order = np.random.default_rng(0).permutation(tissue.n_obs)
    reference, query = tissue[np.sort(order[:2000])].copy(), tissue[np.sort(order[2000:])].copy()
    angle = 0.6
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    query.obsm["spatial"] = query.obsm["spatial"] @ rotation.T + 5000.0
    pooled = ad.concat([reference, query], label="slice", keys=["reference", "query"], index_unique="-")
    sc.pp.normalize_total(pooled)
    sc.pp.log1p(pooled)
    sc.pp.pca(pooled, n_comps=20, random_state=0)
    joint = np.empty_like(pooled.obsm["X_pca"])
    for name in ("reference", "query"):
        rows = np.flatnonzero(pooled.obs["slice"].to_numpy() == name)
        neighbours = sd.graph.nearest_other_spots(pooled.obsm["spatial"][rows], 6)
        block = pooled.obsm["X_pca"][rows]
        joint[rows] = (block + block[neighbours].sum(axis=1)) / 7
    reference.obsm["X_joint"], query.obsm["X_joint"] = joint[:reference.n_obs], joint[reference.n_obs:]
    return reference, query


# --- pseudotime -------------------------------------------------------------------------------------------------

def test_pseudotime_orders_planted_layers(layered):
    adata = layered.copy()
    layers = list(adata.obs["ground_truth"].cat.categories)
    sd.tl.pseudotime(adata, use_rep="X_baseline", root_domain="D1", domain_key="ground_truth")
    from_first = sd.metrics.pseudotime_spearman(adata.obs["pseudotime"], adata.obs["ground_truth"], layers)
    assert from_first >= 0.8
    record = adata.uns["spatialdomains"]["pseudotime"]
    assert adata.obs.loc[record["root_spot"], "ground_truth"] == "D1"
    assert adata.obs.loc[record["root_spot"], "pseudotime"] == 0
    assert np.nanmin(adata.obs["pseudotime"]) == 0 and np.nanmax(adata.obs["pseudotime"]) == pytest.approx(1)
    # Rooted in the last layer, the order reverses; SpaceFlow's automatic root lands at one end.
    sd.tl.pseudotime(adata, use_rep="X_baseline", root_domain="D5", domain_key="ground_truth")
    assert sd.metrics.pseudotime_spearman(adata.obs["pseudotime"], adata.obs["ground_truth"], layers) <= -0.8
    sd.tl.pseudotime(adata, use_rep="X_baseline", random_state=3)
    automatic = adata.obs["pseudotime"].to_numpy().copy()
    assert abs(sd.metrics.pseudotime_spearman(automatic, adata.obs["ground_truth"], layers)) >= 0.8
    assert "SpaceFlow" in adata.uns["spatialdomains"]["pseudotime"]["root_chosen_by"]
    sd.tl.pseudotime(adata, use_rep="X_baseline", random_state=3)
    np.testing.assert_array_equal(adata.obs["pseudotime"].to_numpy(), automatic)  # seeded
    root = adata.obs_names[10]
    sd.tl.pseudotime(adata, use_rep="X_baseline", root_spot=root, key_added="from_spot")
    assert adata.obs.loc[root, "from_spot"] == 0
    assert sd.pl.pseudotime(adata, "from_spot") is not None


def test_pseudotime_follows_a_long_smooth_gradient():
    """2,000 spots along a line: the leading diffusion components have eigenvalues above 0.9994, which scanpy's
    dpt leaves out (its pseudotime then has Spearman 0.12 with the position); this one keeps them."""
    import anndata as ad
    from scipy.stats import spearmanr

    position = np.random.default_rng(0).random(2000)
    adata = ad.AnnData(obs={"x": position})
    adata.obs_names = [f"s{i}" for i in range(2000)]
    adata.obsm["X_line"] = np.c_[position, np.zeros_like(position)]
    sd.tl.pseudotime(adata, use_rep="X_line", root_spot=adata.obs_names[int(np.argmin(position))])
    assert spearmanr(adata.obs["pseudotime"], position).statistic > 0.99


def test_pseudotime_leaves_spots_without_embedding_out(layered):
    adata = layered.copy()
    adata.obsm["X_baseline"][:5] = np.nan
    sd.tl.pseudotime(adata, use_rep="X_baseline")
    assert adata.obs["pseudotime"].iloc[:5].isna().all()
    assert adata.obs["pseudotime"].iloc[5:].notna().all()


@pytest.mark.parametrize("options, message", [
    ({"root_domain": "D1", "root_spot": "spot00001-1"}, "not both"),
    ({"root_domain": "D9", "domain_key": "ground_truth"}, "not a value of obs['ground_truth']"),
    ({"root_domain": "D1"}, "obs['domain'] does not exist"),
    ({"root_spot": "nowhere"}, "no spot of that name"),
    ({"use_rep": "X_missing"}, "obsm['X_missing'] does not exist"),
    ({"n_neighbors": 1}, "n_neighbors=1"),
])
def test_pseudotime_bad_options(layered, options, message):
    adata = layered.copy()
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sd.tl.pseudotime(adata, **{"use_rep": "X_baseline", **options})
    assert "pseudotime" not in adata.obs


def test_pseudotime_spearman_follows_the_order_given():
    labels = np.array(["a", "a", "b", "b", "c", "c", "x", None], dtype=object)
    time = np.array([0.0, 0.1, 0.5, 0.6, 0.9, 1.0, 0.2, 0.3])
    assert sd.metrics.pseudotime_spearman(time, labels, ["a", "b", "c"]) == pytest.approx(1.0, abs=0.06)
    assert sd.metrics.pseudotime_spearman(time, labels, ["c", "b", "a"]) < -0.9
    with pytest.raises(InputError, match="fewer than two"):
        sd.metrics.pseudotime_spearman(time, labels, ["q", "a"])


# --- slice matching and label transfer ----------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [True, False])
def test_label_transfer_recovers_labels_across_a_rotation_and_shift(two_slices, smoothing):
    reference, query = (part.copy() for part in two_slices)
    counts_before = query.X.copy()
    sd.tl.transfer_labels(reference, query, label_key="ground_truth", use_rep="X_joint", spatial_smoothing=smoothing)
    record = query.uns["spatialdomains"]["transfer_labels"]
    assert record["scores"]["ari"] >= 0.9
    assert record["truth_key"] == "ground_truth" and record["search"] == "exact"
    assert sd.metrics.ari(query.obs["ground_truth"], query.obs["ground_truth_transferred"]) >= 0.9
    confidence = query.obs["ground_truth_transferred_confidence"]
    assert confidence.between(0, 1).all() and confidence.median() > 0.8
    partners = query.obs["ground_truth_transferred_reference_spot"]
    assert set(partners) <= set(reference.obs_names)
    given = reference.obs.loc[partners.to_numpy(), "ground_truth"].to_numpy()
    np.testing.assert_array_equal(given, query.obs["ground_truth_transferred"].to_numpy())
    assert (query.X != counts_before).nnz == 0  # only columns were added
    assert sd.pl.matches(reference, query, key="ground_truth_transferred") is not None


def test_label_transfer_keeps_spots_without_embedding_apart_and_writes_to_h5ad(two_slices, tmp_path):
    import anndata as ad

    reference, query = (part.copy() for part in two_slices)
    query.obsm["X_joint"][:4] = np.nan
    sd.tl.transfer_labels(reference, query, label_key="ground_truth", use_rep="X_joint")
    assert query.obs["ground_truth_transferred"].iloc[:4].isna().all()
    assert query.obs["ground_truth_transferred_confidence"].iloc[:4].isna().all()
    assert query.obs["ground_truth_transferred"].iloc[4:].notna().all()
    query.write_h5ad(tmp_path / "query.h5ad")
    back = ad.read_h5ad(tmp_path / "query.h5ad")
    assert (back.obs["ground_truth_transferred_reference_spot"].astype(str).iloc[4:] ==
            query.obs["ground_truth_transferred_reference_spot"].astype(str).iloc[4:]).all()
    with pytest.raises(InputError, match="would overwrite the query's own obs\\['ground_truth'\\]"):
        sd.tl.transfer_labels(reference, query, label_key="ground_truth", use_rep="X_joint", key_added="ground_truth")


@pytest.mark.slow  # numba compiles pynndescent for about a minute in a fresh environment
def test_approximate_search_agrees_with_exact(two_slices, monkeypatch):
    from spatialdomains.tl import transfer

    reference, query = two_slices
    exact = sd.tl.match_slices(reference, query, use_rep="X_joint")
    monkeypatch.setattr(transfer, "EXACT_PAIRS_LIMIT", 0)
    approximate = sd.tl.match_slices(reference, query, use_rep="X_joint")
    assert (approximate["search"] == "approximate").all()
    labels = reference.obs["ground_truth"]
    agree = (labels[exact["reference_spot"]].to_numpy() == labels[approximate["reference_spot"]].to_numpy()).mean()
    assert agree >= 0.95


def test_label_transfer_bad_inputs(two_slices):
    reference, query = (part.copy() for part in two_slices)
    with pytest.raises(InputError, match="no obs\\['layer'\\]"):
        sd.tl.transfer_labels(reference, query, label_key="layer", use_rep="X_joint")
    with pytest.raises(InputError, match="reference has no obsm\\[.X_staig.\\]"):
        sd.tl.transfer_labels(reference, query, label_key="ground_truth")
    query.obsm["X_joint"] = query.obsm["X_joint"][:, :5]
    with pytest.raises(InputError, match="embed both slices together"):
        sd.tl.transfer_labels(reference, query, label_key="ground_truth", use_rep="X_joint")
    assert "ground_truth_transferred" not in query.obs


# --- gene selection ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("selection, floor", [("seurat_v3", 0.9), ("mvp", 0.8), ("spatial", 0.9)])
def test_gene_selection_finds_the_planted_programs(layered, selection, floor):
    genes = sd.pp.highly_variable_genes(sp.csr_matrix(layered.X), 100, selection, layered.obsm["spatial"])
    assert len(genes) == 100 and np.all(np.diff(genes) > 0)
    assert np.mean(layered.var["program"].to_numpy()[genes] != "background") >= floor


def test_gene_selection_is_an_option_of_both_methods_and_recorded(sample):
    with pytest.raises(InputError, match="gene_selection='moran'"):
        sd.tl.staig(sample, gene_selection="moran")
    sd.tl.spotscape(sample, gene_selection="spatial", n_top_genes=200, n_epochs=2, progress=False)
    record = sample.uns["spatialdomains"]["spotscape"]
    assert record["parameters"]["gene_selection"] == "spatial"
    assert len(record["genes"]) == 200


# --- the number of domains by stability -----------------------------------------------------------------------

def test_stability_recovers_the_planted_number(layered):
    adata = layered.copy()
    sd.tl.cluster(adata, use_rep="X_baseline", method="kmeans", choose_by="stability", n_domains_range=(2, 9))
    record = adata.uns["spatialdomains"]["cluster"]
    assert record["n_domains"] == 5 and record["n_domains_chosen_by"] == "stability"
    scores = {int(k): v for k, v in record["details"]["stability_by_n_domains"].items()}
    assert sorted(scores) == list(range(2, 10)) and all(0 <= v <= 1 for v in scores.values())
    assert sd.metrics.ari(adata.obs["ground_truth"], adata.obs["domain"]) >= 0.8
    assert sd.pl.n_domains_scores(adata) is not None
    with pytest.raises(InputError, match="choose_by='gap'"):
        sd.tl.cluster(adata, use_rep="X_baseline", choose_by="gap")


# --- STAIG resampling ------------------------------------------------------------------------------------------

def test_staig_resampling_averages_sampled_graphs_and_is_recorded(sample):
    plain, resampled = sample.copy(), sample.copy()
    sd.tl.staig(plain, n_epochs=3, progress=False)
    sd.tl.staig(resampled, n_epochs=3, n_resamples=4, progress=False)
    assert resampled.uns["spatialdomains"]["staig"]["parameters"]["n_resamples"] == 4
    # Same seed, same training: only the final embedding differs (a mean over sampled edge sets).
    assert not np.allclose(plain.obsm["X_staig"], resampled.obsm["X_staig"])
    assert np.corrcoef(plain.obsm["X_staig"].ravel(), resampled.obsm["X_staig"].ravel())[0, 1] > 0.9
    with pytest.raises(InputError, match="n_resamples=-1"):
        sd.tl.staig(sample.copy(), n_resamples=-1)


# --- imputation -------------------------------------------------------------------------------------------------

def test_imputed_expression_is_an_anndata_markers_run_on(sample):
    counts_before = sample.X.copy()
    imputed = sd.tl.impute(sample, n_epochs=5, n_top_genes=200, progress=False)
    assert imputed.n_obs == sample.n_obs and imputed.n_vars == 200
    stored = sample.obsm["spotscape_denoised"]  # the decoder output, columns in the record's gene order
    genes = list(sample.uns["spatialdomains"]["spotscape"]["denoised_genes"])
    gene = imputed.var_names[7]
    np.testing.assert_allclose(imputed[:, gene].X.ravel(), np.maximum(stored[:, genes.index(gene)], 0), rtol=1e-6)
    assert np.all(imputed.X >= 0) and "observed" in imputed.layers
    # Every gene used: the values come from the layer, and the earlier run's obsm copy is gone.
    everything = sd.tl.impute(sample, retrain=True, n_epochs=5, n_top_genes=10_000, progress=False)
    assert "spotscape_denoised" in sample.layers and "spotscape_denoised" not in sample.obsm
    assert everything.n_vars == sample.n_vars
    np.testing.assert_allclose(everything.X, np.maximum(sample.layers["spotscape_denoised"], 0), rtol=1e-6)
    assert (sample.X != counts_before).nnz == 0
    sd.tl.cluster(imputed, use_rep="X_spotscape", n_domains=3, method="kmeans")
    table = sd.analysis.markers(imputed)
    assert len(table) > 0
    with pytest.raises(InputError, match="retrain=True"):
        sd.tl.impute(sample, n_epochs=7)
    with pytest.raises(InputError, match="method='staig'"):
        sd.tl.impute(sample, method="staig")


def test_masked_value_imputation_beats_the_gene_mean_where_there_is_a_pattern():
    """Scored on the planted domain programmes (genes elsewhere have one mean everywhere, which the gene mean
    predicts best)."""
    adata = sd.datasets.simulate_visium(n_spots=600, n_domains=5, seed=2)
    counts_before = adata.X.copy()
    planted = adata.var_names[adata.var["program"].isin(adata.uns["simulation"]["go_id"])]
    scores = sd.tl.evaluate_imputation(adata, fraction=0.1, genes=planted, n_epochs=300, progress=False)
    assert scores["n_held_back"] > 1000 and scores["genes_scored"] > 100
    assert scores["rmse"] < scores["rmse_gene_mean"] and scores["median_l1"] < scores["median_l1_gene_mean"]
    assert adata.uns["spatialdomains"]["imputation"]["fraction"] == 0.1
    assert "X_spotscape" not in adata.obsm and (adata.X != counts_before).nnz == 0
    with pytest.raises(InputError, match="fraction=1.5"):
        sd.tl.evaluate_imputation(adata, fraction=1.5)
    with pytest.raises(InputError, match="NOTAGENE"):
        sd.tl.evaluate_imputation(adata, genes=["NOTAGENE"])


def test_spami_imputes_rna_and_protein_and_beats_the_gene_mean_on_marker_genes():
    """SpaMI's reconstructions: RNA mapped back to its genes, protein as CLR values; ATAC is refused, naming why.
    The masked test is scored on the RNA genes that differ most between the planted domains."""
    mdata = sd.datasets.simulate_multiomics(600, 4, seed=1)
    rna = sd.tl.impute(mdata, method="spami", n_epochs=20, progress=False)
    kept = list(mdata.uns["spatialdomains"]["spami"]["features"]["rna"])
    assert list(rna.var_names) == kept and rna.uns["spatialdomains"]["impute"]["modality"] == "rna"
    np.testing.assert_allclose(rna.X, np.maximum(mdata.obsm["spami_denoised_rna"], 0), rtol=1e-6)
    assert rna.layers["observed"].shape == rna.shape and "spami" in rna.uns["spatialdomains"]
    protein = sd.tl.impute(mdata, method="spami", modality="adt")  # the same run, another modality
    np.testing.assert_allclose(protein.X, np.maximum(mdata.obsm["spami_recon_adt"], 0), rtol=1e-6)
    observed = np.asarray(protein.layers["observed"])
    np.testing.assert_allclose(observed, sd.pp.clr(mdata["adt"].X), rtol=1e-5)
    with pytest.raises(InputError, match="modality='protein' is not a modality here"):
        sd.tl.impute(mdata, method="spami", modality="protein", retrain=True)
    atac = sd.datasets.simulate_multiomics(200, 3, second="atac", seed=1)
    with pytest.raises(InputError, match="does not map back to peaks"):
        sd.tl.impute(atac, method="spami", modality="atac", n_epochs=2)
    assert "X_spami" not in atac.obsm  # refused before any training

    shares = mdata["rna"].X.toarray()
    shares /= shares.sum(axis=1, keepdims=True)
    means = pd.DataFrame(shares).groupby(mdata.obs["ground_truth"].to_numpy(), observed=True).mean()
    markers = mdata["rna"].var_names[np.argsort(-(means.max() / means.min()).to_numpy())[:40]]
    modalities = dict(mdata.mod)  # a dict of modalities works as the MuData does (it keeps no record)
    scores = sd.tl.evaluate_imputation(modalities, method="spami", genes=markers, n_epochs=200, progress=False)
    assert scores["modality"] == "rna" and scores["genes_scored"] == 40
    assert scores["rmse"] < scores["rmse_gene_mean"] and scores["median_l1"] < scores["median_l1_gene_mean"]


# --- conditions ---------------------------------------------------------------------------------------------------

def _conditions(replicates: int):
    """One simulated tissue dealt into 2 × ``replicates`` slices; in the 'disease' slices the first 20 genes go up
    threefold in domain D2 only. 300 genes keep the tests quick."""
    import anndata as ad

    tissue = sd.datasets.simulate_visium(n_spots=2000, n_domains=3, seed=10)[:, :300].copy()
    order = np.random.default_rng(0).permutation(tissue.n_obs)
    parts = []
    for i, condition in enumerate(["control"] * replicates + ["disease"] * replicates):
        part = tissue[np.sort(order[i::2 * replicates])].copy()
        counts = part.X.toarray()
        if condition == "disease":
            rows = np.flatnonzero(part.obs["ground_truth"].to_numpy() == "D2")
            counts[np.ix_(rows, np.arange(20))] = np.random.default_rng(i).poisson(3 * counts[np.ix_(rows, np.arange(20))])
        part.X = sp.csr_matrix(counts)
        part.obs["condition"], part.obs["slice"] = condition, f"s{i}"
        parts.append(part)
    return ad.concat(parts, index_unique="-")


@pytest.mark.parametrize("replicates, test, floor", [(2, "pseudobulk", 15), (1, "wilcoxon", 3)])
def test_condition_comparison_finds_the_planted_change(replicates, test, floor):
    data = _conditions(replicates)
    result = sd.tl.compare_conditions(data, "condition", domain_key="ground_truth", reference="control")
    genes = result.genes
    assert genes["test"].str.startswith(test).all()
    found = genes[genes["padj"] < 0.05]
    planted = set(data.var_names[:20])
    assert (found["domain"] == "D2").all()
    # Up: the planted genes. Down, with spots as replicates: the others, which normalisation lowers a little when
    # 20 genes go up threefold.
    up = found[found["log2fc"] > 0]
    assert len(up) >= floor and set(up["gene"]) <= planted
    assert set(result.composition["domain"]) == {"D1", "D2", "D3"} and (result.composition["pvalue"] > 0.01).all()
    assert len(result.shares) == 2 * replicates
    record = data.uns["spatialdomains"]["compare_conditions"]
    assert record["reference"] == "control" and record["n_significant"] == len(found)


def test_spots_without_a_condition_are_left_out_not_named_nan():
    data = _conditions(1)
    data.obs["condition"] = data.obs["condition"].astype(object)
    data.obs.loc[data.obs_names[:30], "condition"] = np.nan
    result = sd.tl.compare_conditions(data, "condition", domain_key="ground_truth")
    assert set(result.genes["condition"]) == {"disease"} and set(result.composition["condition"]) == {"disease"}
    assert data.uns["spatialdomains"]["compare_conditions"]["conditions"] == ["control", "disease"]


def test_condition_comparison_bad_inputs():
    data = _conditions(1)
    with pytest.raises(InputError, match="reference='healthy'"):
        sd.tl.compare_conditions(data, "condition", domain_key="ground_truth", reference="healthy")
    data.obs.loc[data.obs_names[:5], "condition"] = "disease"
    with pytest.raises(InputError, match="several conditions"):
        sd.tl.compare_conditions(data, "condition", domain_key="ground_truth")
    with pytest.raises(InputError, match="obs\\['treatment'\\] does not exist"):
        sd.tl.compare_conditions(data, "treatment", domain_key="ground_truth")


# --- settings without labels ------------------------------------------------------------------------------------

def test_learning_rate_is_chosen_by_silhouette_and_the_kept_run_stored(sample):
    sd.tl.select_learning_rate(sample, "spotscape", n_domains=3, learning_rates=(1e-5, 1e-3), n_epochs=15,
                               n_top_genes=200, progress=False)
    record = sample.uns["spatialdomains"]["learning_rate_selection"]
    scores = {float(k): v for k, v in record["silhouette_by_learning_rate"].items()}
    assert set(scores) == {1e-5, 1e-3} and record["chosen"] == max(scores, key=scores.get)
    assert sample.uns["spatialdomains"]["spotscape"]["parameters"]["learning_rate"] == record["chosen"]
    assert sample.obsm["X_spotscape"].shape == (sample.n_obs, 64)
    with pytest.raises(InputError, match="learning_rates"):
        sd.tl.select_learning_rate(sample, learning_rate=1e-3)


def test_spami_presets_carry_the_published_settings():
    from spatialdomains.pipeline import configure

    mdata = sd.datasets.simulate_multiomics(n_spots=300, seed=0)
    _, settings, run = configure("spami", mdata, preset="thymus")
    assert run.preset == "thymus"
    assert (settings.learning_rate, settings.n_epochs, settings.n_pcs, settings.min_spots) == (1e-4, 600, 21, 50)
    assert settings.reconstruction_weights == (10.0, 25.0) and settings.correspondence_weight == 1.0
    _, settings, _ = configure("spami", mdata, preset="p22", n_epochs=50)
    assert settings.n_neighbors == 6 and settings.n_epochs == 50  # options given override the preset
    with pytest.raises(InputError, match="preset must be one of"):
        configure("spami", mdata, preset="paper")
