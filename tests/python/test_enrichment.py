"""GO / gene-set enrichment: the fallback engine against hand computations and R, annotations, ID types, GMT."""
from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialdomains.analysis import annotation, enrichment
from spatialdomains.analysis import enrich, enrich_go, go_gene_sets, p_adjust, read_gmt, storey_qvalues
from spatialdomains.errors import BackendUnavailable, InputError

# A small annotation: 40 background genes g00..g39, five sets of different sizes and overlaps.
BACKGROUND = [f"g{i:02d}" for i in range(40)]
SETS = {
    "T1": BACKGROUND[0:12],          # 12 genes, 5 query hits
    "T2": BACKGROUND[5:15],          # 10 genes (lower size bound, kept)
    "T3": BACKGROUND[11:20],         # 9 genes: below min_size 10, not tested by default
    "T4": BACKGROUND[20:35],         # 15 genes, 1 query hit
    "T5": BACKGROUND[35:40],         # 5 genes, no query gene: not tested
}
QUERY = ["g03", "g01", "g07", "g11", "g02", "g21", "g99"]  # g99 unannotated: not counted in n


def write_gmt(path: Path, sets=SETS) -> Path:
    path.write_text("".join(f"{term}\tdescription of {term}\t" + "\t".join(genes) + "\n"
                            for term, genes in sets.items()))
    return path


@pytest.fixture
def small_sets(tmp_path):
    return read_gmt(write_gmt(tmp_path / "small.gmt"))


def hand_pvalue(k: int, m: int, n_background: int, n_drawn: int) -> float:
    """P(X >= k), X ~ Hypergeometric, summed exactly with integer binomials."""
    total = math.comb(n_background, n_drawn)
    return sum(math.comb(m, x) * math.comb(n_background - m, n_drawn - x)
               for x in range(k, min(m, n_drawn) + 1)) / total


def test_fallback_matches_hand_computation(small_sets):
    result = enrich(QUERY, small_sets, min_size=10, max_size=500)
    assert list(result.columns) == enrichment.RESULT_COLUMNS
    assert set(result["ID"]) == {"T1", "T2", "T4"}  # T3 too small, T5 not hit
    # n = annotated query genes (g99 has no annotation), N = 40 annotated genes.
    expected = {"T1": (5, 12), "T2": (2, 10), "T4": (1, 15)}
    by_id = result.set_index("ID")
    for term, (k, m) in expected.items():
        assert by_id.loc[term, "GeneRatio"] == f"{k}/6"
        assert by_id.loc[term, "BgRatio"] == f"{m}/40"
        assert by_id.loc[term, "Count"] == k
        assert by_id.loc[term, "pvalue"] == pytest.approx(hand_pvalue(k, m, 40, 6), rel=1e-12)
        assert by_id.loc[term, "Description"] == f"description of {term}"
    # geneID in query order; rows by p-value.
    assert by_id.loc["T1", "geneID"] == "g03/g01/g07/g11/g02"
    assert by_id.loc["T2", "geneID"] == "g07/g11"
    assert list(result["pvalue"]) == sorted(result["pvalue"])
    p = result["pvalue"].to_numpy()
    m = len(p)
    order = np.argsort(p)
    bh = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):  # BH by hand, from the largest p down
        running = min(running, p[order[rank - 1]] * m / rank)
        bh[order[rank - 1]] = running
    np.testing.assert_allclose(result["p.adjust"], bh, rtol=1e-12)


def test_size_filter_is_inclusive_and_applied_within_the_universe(small_sets):
    assert "T2" in set(enrich(QUERY, small_sets, min_size=10, max_size=10)["ID"])
    assert set(enrich(QUERY, small_sets, min_size=10, max_size=10)["ID"]) == {"T2"}
    assert "T3" in set(enrich(QUERY, small_sets, min_size=9)["ID"])
    # Universe without g00..g04: T1 shrinks to 7 genes (dropped at min 10), N = 35; n still counts every
    # annotated query gene, as clusterProfiler does.
    universe = BACKGROUND[5:] + ["g99"]
    result = enrich(QUERY, small_sets, universe=universe, min_size=5).set_index("ID")
    assert result.loc["T1", "BgRatio"] == "7/35"
    assert result.loc["T1", "GeneRatio"] == "2/6"
    assert result.loc["T1", "geneID"] == "g07/g11"


def test_no_mapped_gene_gives_an_empty_table(small_sets):
    result = enrich(["nothing", "here"], small_sets)
    assert result.empty and list(result.columns) == enrichment.RESULT_COLUMNS


def test_p_adjust_methods_match_r_definitions():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.01, 0.5])
    m = len(p)
    np.testing.assert_allclose(p_adjust(p, "bonferroni"), np.minimum(1, p * m))
    # Holm: step-down, cumulative max.
    order = np.argsort(p, kind="stable")
    holm = np.maximum.accumulate((m - np.arange(m)) * p[order])
    expected = np.empty(m)
    expected[order] = np.minimum(1, holm)
    np.testing.assert_allclose(p_adjust(p, "holm"), expected)
    # BY is BH scaled by sum(1/i), capped at 1.
    np.testing.assert_allclose(p_adjust(p, "BY"), np.minimum(1, p_adjust(p, "BH") * sum(1 / np.arange(1, m + 1))))
    with pytest.raises(InputError, match="p_adjust_method"):
        p_adjust(p, "hommel")


def test_storey_qvalue_follows_pi0_at_lambda_005():
    p = np.array([0.001, 0.01, 0.02, 0.3, 0.6, 0.9, 0.04, 0.07])
    pi0 = min(1.0, np.mean(p >= 0.05) / 0.95)
    np.testing.assert_allclose(storey_qvalues(p), pi0 * p_adjust(p, "BH"))
    assert np.isnan(storey_qvalues(np.array([0.001, 0.01]))).all()  # pi0 = 0: undefined, NA as in clusterProfiler


def test_significant_applies_clusterprofiler_cutoffs(small_sets):
    table = pd.DataFrame({"pvalue": [0.001, 0.01, 0.04, 0.2], "p.adjust": [0.004, 0.02, 0.06, 0.2],
                          "qvalue": [0.003, 0.25, 0.05, 0.2]})
    assert enrichment.significant(table).index.tolist() == [0]
    table["qvalue"] = [0.003, np.nan, 0.05, 0.2]  # any NA q-value: the q cutoff is not applied
    assert enrichment.significant(table).index.tolist() == [0, 1]


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R (Rscript) is not installed")
def test_fallback_matches_r_phyper_p_adjust_and_qvalue(small_sets, tmp_path):
    """The fallback's numbers against R's own phyper, p.adjust and (when installed) qvalue."""
    rng = np.random.default_rng(3)
    genes = [f"x{i:03d}" for i in range(300)]
    sets = {f"S{j:02d}": list(rng.choice(genes, size=int(rng.integers(10, 60)), replace=False)) for j in range(40)}
    sets.update({f"P{j}": genes[j * 20:(j * 20) + 25] for j in range(3)})  # planted: overlap the query
    gene_sets = read_gmt(write_gmt(tmp_path / "random.gmt", sets))
    query = genes[0:30] + list(rng.choice(genes, size=20, replace=False))
    result = enrich(query, gene_sets, min_size=10, max_size=500)
    k = result["Count"].to_numpy()
    m = result["BgRatio"].str.split("/").str[0].astype(int).to_numpy()
    n_drawn = int(result["GeneRatio"].iloc[0].split("/")[1])
    n_background = int(result["BgRatio"].iloc[0].split("/")[1])
    script = f"""
    k <- c({','.join(map(str, k))}); M <- c({','.join(map(str, m))}); N <- {n_background}; n <- {n_drawn}
    p <- phyper(k - 1, M, N - M, n, lower.tail = FALSE)
    q <- if (requireNamespace("qvalue", quietly = TRUE))
      tryCatch(qvalue::qvalue(p, lambda = 0.05, pi0.method = "bootstrap")$qvalues, error = function(e) NULL) else NULL
    cat(jsonlite::toJSON(list(p = p, bh = p.adjust(p, "BH"), q = q), digits = NA))
    """
    out = subprocess.run(["Rscript", "--vanilla", "-e", script], capture_output=True, text=True, check=True).stdout
    from_r = json.loads(out)
    np.testing.assert_allclose(result["pvalue"], from_r["p"], rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(result["p.adjust"], from_r["bh"], rtol=1e-10, atol=1e-300)
    if from_r["q"]:
        np.testing.assert_allclose(result["qvalue"], from_r["q"], rtol=1e-10, atol=1e-300)
    else:
        pytest.skip("R package qvalue not installed (apt-get install r-bioc-qvalue): q-values not compared")


def test_read_gmt_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_gmt(tmp_path / "missing.gmt")
    bad = tmp_path / "bad.gmt"
    bad.write_text("T1 only-spaces g1 g2\n")
    with pytest.raises(InputError, match="bad.gmt:1"):
        read_gmt(bad)
    empty = tmp_path / "empty.gmt"
    empty.write_text("\n")
    with pytest.raises(InputError, match="no gene sets"):
        read_gmt(empty)


def test_enrich_go_with_gmt_any_species(tmp_path):
    gmt = write_gmt(tmp_path / "sets.gmt")
    result = enrich_go({"1": QUERY, "2": ["g20", "g21", "g22", "g23", "g24"]}, gene_sets=gmt, universe=BACKGROUND,
                       engine="fallback", pvalue_cutoff=1, qvalue_cutoff=1)
    assert result.attrs["engine"] == "fallback"
    assert "sets.gmt" in result.attrs["annotation"]
    expected = ["domain"] + enrichment.RESULT_COLUMNS
    expected.insert(expected.index("geneID") + 1, "geneSymbols")  # plain names (no OrgDb for GMT genes) as given
    assert list(result.columns) == expected
    assert (result["geneSymbols"] == result["geneID"]).all()
    top = result.groupby("domain").head(1).set_index("domain")["ID"]
    assert top.to_dict() == {"1": "T1", "2": "T4"}


def test_enrich_go_reads_a_marker_table(tmp_path):
    gmt = write_gmt(tmp_path / "sets.gmt")
    table = pd.DataFrame({"domain": ["1"] * 4 + ["2"] * 2, "gene": ["g00", "g01", "g02", "g20", "g21", "g22"],
                          "significant": [True, True, True, False, True, True], "log2fc": [1, 1, 1, 1, -1, 2.0]})
    result = enrich_go(table, gene_sets=gmt, engine="fallback", pvalue_cutoff=1, qvalue_cutoff=1)
    assert result.loc[result["domain"] == "1", "GeneRatio"].iloc[0] == "3/3"  # g20 not significant
    assert result.loc[result["domain"] == "2", "geneID"].tolist() == ["g22"]  # down-regulated g21 left out
    with pytest.raises(InputError, match="lacks the columns"):
        enrich_go(table.drop(columns="significant"), gene_sets=gmt)


def test_engine_choice():
    with pytest.raises(InputError, match="engine"):
        enrich_go({"1": ["a"]}, engine="magic")
    if enrichment.clusterprofiler_available():
        pytest.skip("clusterProfiler is installed: the missing-engine error cannot occur")
    with pytest.raises(BackendUnavailable, match="clusterProfiler"):
        enrich_go({"1": ["a"]}, gene_sets=small_gene_sets(), engine="clusterProfiler")


def small_gene_sets():
    pairs = pd.DataFrame([(t, g) for t, genes in SETS.items() for g in genes], columns=["term", "gene"])
    return annotation.GeneSets(pairs=pairs, names=pd.Series({t: t for t in SETS}), source="test sets")


# ---- GO from Bioconductor's annotation databases -------------------------------------------------------------


def _org_hs():
    try:
        return annotation._database_file("org.Hs.eg.db"), annotation._database_file("GO.db")
    except InputError as error:
        pytest.skip(f"org.Hs.eg.db / GO.db not installed: {error}")


@pytest.fixture(scope="module")
def go_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("go-cache")


def test_go_sets_are_propagated_to_ancestors_and_cached(go_cache):
    org_path, go_path = _org_hs()
    sets = go_gene_sets("BP", key_type="ENTREZID", cache_dir=go_cache)
    assert len(list(go_cache.glob("go_org.Hs.eg_BP_ENTREZID_*.npz"))) == 1
    members = sets.pairs.groupby("term")["gene"].agg(set)
    # Every direct annotation must reappear on each is_a/part_of parent term (GOALL is propagated).
    with sqlite3.connect(f"file:{org_path}?mode=ro", uri=True) as org, \
            sqlite3.connect(f"file:{go_path}?mode=ro", uri=True) as go:
        direct = pd.read_sql_query("SELECT g.gene_id AS gene, b.go_id AS term FROM go_bp b JOIN genes g "
                                   "ON b._id = g._id", org).drop_duplicates().sample(300, random_state=0)
        parents = pd.read_sql_query(
            "SELECT c.go_id AS child, p.go_id AS parent FROM go_bp_parents r JOIN go_term c ON r._id = c._id "
            "JOIN go_term p ON r._parent_id = p._id WHERE r.relationship_type IN ('isa', 'part of')", go)
    checked = direct.merge(parents, left_on="term", right_on="child")
    present = [row.gene in members.get(row.parent, set()) for row in checked.itertuples()]
    assert len(present) > 300 and np.mean(present) > 0.99
    # The root holds (almost) every annotated gene; the cache gives back the same table.
    assert len(members["GO:0008150"]) / sets.pairs["gene"].nunique() > 0.99
    annotation.clear_memory_cache()
    again = go_gene_sets("BP", key_type="ENTREZID", cache_dir=go_cache)
    pd.testing.assert_frame_equal(again.pairs.sort_values(["term", "gene"]).reset_index(drop=True),
                                  sets.pairs.sort_values(["term", "gene"]).reset_index(drop=True))
    assert again.names["GO:0008150"] == "biological_process"


@pytest.mark.parametrize("ids, key_type", [
    (["MBP", "PCP4", "GFAP", "SNAP25", "MOBP", "PLP1", "NOT-A-GENE"], "SYMBOL"),
    (["ENSG00000197971.15", "ENSG00000183036", "ENSG00000131095", "ENSG00000132639"], "ENSEMBL"),
    (["4155", "5121", "2670", "6616", "1"], "ENTREZID"),
])
def test_gene_id_type_is_detected(ids, key_type):
    _org_hs()
    assert annotation.detect_key_type(ids) == key_type


def test_unknown_ids_are_refused_with_examples():
    _org_hs()
    with pytest.raises(InputError, match="gene-ID type.*gene_0"):
        annotation.detect_key_type([f"gene_{i}" for i in range(20)])


def test_species_from_ids():
    assert annotation.detect_species(["ENSMUSG00000000001", "ENSMUSG00000000028"]) == "mouse"
    assert annotation.detect_species(["Mbp", "Pcp4", "Gfap"]) == "mouse"
    assert annotation.detect_species(["MBP", "PCP4", "GFAP"]) == "human"
    with pytest.raises(InputError, match="species 'yeti'"):
        go_gene_sets(species="yeti")


def test_enrich_go_on_human_symbols_finds_myelination(go_cache):
    _org_hs()
    myelin = ["MBP", "PLP1", "MOBP", "MAG", "MOG", "CNP", "CLDN11", "ERMN", "OPALIN", "TF", "SOX10", "OLIG2"]
    neuronal = ["SNAP25", "SYT1", "STMN2", "GAP43", "NEFL", "NEFM", "VSNL1", "CAMK2A", "SYN1", "RBFOX3"]
    result = enrich_go({"WM": myelin, "neurons": neuronal}, cache_dir=go_cache, engine="fallback")
    assert result.attrs["parameters"]["key_type"] == "SYMBOL"
    top = result[result["domain"] == "WM"].head(10)["Description"].str.cat(sep="|")
    assert "myelin" in top or "ensheathment" in top
    top = result[result["domain"] == "neurons"].head(10)["Description"].str.cat(sep="|")
    assert "synap" in top


@pytest.mark.skipif(not enrichment.clusterprofiler_available(),
                    reason="clusterProfiler (R) with rpy2 is not installed; only the fallback engine can run")
def test_clusterprofiler_and_fallback_agree(go_cache):
    myelin = ["MBP", "PLP1", "MOBP", "MAG", "MOG", "CNP", "CLDN11", "ERMN", "OPALIN", "TF", "SOX10", "OLIG2"]
    kwargs = dict(pvalue_cutoff=1, qvalue_cutoff=1, species="human", key_type="SYMBOL")
    ours = enrich_go({"WM": myelin}, engine="fallback", cache_dir=go_cache, **kwargs)
    theirs = enrich_go({"WM": myelin}, engine="clusterProfiler", **kwargs)
    assert theirs.attrs["engine"] == "clusterProfiler"
    merged = ours.merge(theirs, on="ID", suffixes=("", "_cp"))
    assert len(merged) == len(ours) == len(theirs)
    np.testing.assert_allclose(merged["pvalue"], merged["pvalue_cp"], rtol=1e-8)
    assert (merged["GeneRatio"] == merged["GeneRatio_cp"]).all() and (merged["BgRatio"] == merged["BgRatio_cp"]).all()
