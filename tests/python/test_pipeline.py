"""The shared pipeline: options, per-slice steps, hand-back, seeds and scoped settings, the same for every door."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spatialdomains as sd
from spatialdomains.errors import InputError

FAST = {"n_epochs": 2, "progress": False}
SMALL_IMAGE = {"input_px": 32, "backbone": "resnet18", "patch_px": 64, "batch_size": 16}


@pytest.fixture(scope="module")
def imaged_slices():
    return [sd.datasets.simulate_visium(100, 3, seed=s, image=True) for s in (5, 6)]


def test_find_domains_on_slices_with_use_image_makes_features_per_slice(imaged_slices):
    slices = [one.copy() for one in imaged_slices]
    with pytest.warns(UserWarning, match="random weights"):
        combined = sd.find_domains(slices, "staig", 3, use_image=True, image_options=SMALL_IMAGE,
                                   cluster_method="kmeans", **FAST)
    record = combined.uns["spatialdomains"]["staig"]
    assert record["image_key"] == "X_image" and bool(record["training"]["image"])
    assert record["parameters"]["edge_drop"] == "image"
    for one in slices:
        assert one.obsm["X_image"].shape == (one.n_obs, 64) and "domain" in one.obs
        assert one.uns["spatialdomains"]["image_features"]["settings"]["input_px"] == 32


def test_command_line_integration_with_image_trains_with_the_image(imaged_slices, tmp_path):
    from spatialdomains.cli import main

    paths = []
    for i, one in enumerate(imaged_slices):
        paths.append(str(tmp_path / f"s{i}.h5ad"))
        one.write_h5ad(paths[-1])
    with pytest.warns(UserWarning, match="random weights"):
        code = main(["run", *paths, "--out", str(tmp_path / "out"), "--image", "--backbone", "resnet18",
                     "--epochs", "2", "--n-domains", "3", "--cluster-method", "kmeans", "--quiet"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "joint" / "provenance.json").read_text())
    assert record["staig"]["image_key"] == "X_image" and record["staig"]["training"]["image"]


def test_one_anndata_with_several_slices_needs_one_image_library_per_slice(imaged_slices):
    combined = sd.slices.combine(imaged_slices)
    combined.uns["spatial"] = dict(imaged_slices[0].uns["spatial"])  # one image for two slices
    with pytest.raises(InputError, match="one uns\\['spatial'\\] library per slice"):
        sd.tl.staig(combined, batch_key="slice", use_image=True, image_options=SMALL_IMAGE, **FAST)
    libraries = {name: next(iter(one.uns["spatial"].values())) for name, one in zip(("slice1", "slice2"),
                                                                                     imaged_slices)}
    combined.uns["spatial"] = libraries
    with pytest.warns(UserWarning, match="random weights"):
        sd.tl.staig(combined, batch_key="slice", use_image=True, image_options=SMALL_IMAGE, **FAST)
    assert np.isfinite(combined.obsm["X_image"]).all()
    assert set(combined.uns["spatialdomains"]["image_features"]["per_slice"]) == {"slice1", "slice2"}
    assert bool(combined.uns["spatialdomains"]["staig"]["training"]["image"])


def test_image_features_of_a_list_keep_library_id_and_refuse_one_image_for_several(imaged_slices):
    slices = [one.copy() for one in imaged_slices]
    for one in slices:  # a second library that must not be used
        library = next(iter(one.uns["spatial"].values()))
        one.uns["spatial"] = {"other": {"images": {}, "scalefactors": {}}, "mine": library}
    with pytest.warns(UserWarning, match="random weights"):
        sd.tl.image_features(slices, library_id="mine", progress=False, **SMALL_IMAGE)
    assert all(one.obsm["X_image"].shape[0] == one.n_obs for one in slices)
    with pytest.raises(InputError, match="one image for one section"):
        sd.tl.image_features(slices, image=np.zeros((50, 50, 3)), image_scale=1.0, progress=False)


@pytest.mark.parametrize("grid", ["square", "hexagonal"])
def test_spami_readout_neighbours_are_graph_neighbours(grid):
    from spatialdomains.graph import knn_graph, nearest_other_spots

    rows, cols = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    x = cols + (0.5 * (rows % 2) if grid == "hexagonal" else 0.0)
    y = rows * (np.sqrt(3) / 2 if grid == "hexagonal" else 1.0)
    coordinates = np.column_stack([x.ravel(), y.ravel()])
    adjacency = knn_graph(coordinates, 3).tolil()
    readout = nearest_other_spots(coordinates, 3)
    assert all(set(readout[i]) <= set(adjacency.rows[i]) for i in range(len(coordinates)))
    mdata = sd.datasets.simulate_multiomics(200, 3, seed=1)
    inputs = sd.methods.get("spami").inputs(mdata, sd.methods.SpamiConfig(), sd.methods.RunConfig(),
                                            sd._utils.Timer())
    graph = inputs.adjacency.tolil()
    assert all(set(inputs.neighbours[i]) <= set(graph.rows[i]) for i in range(graph.shape[0]))


def test_spotscape_sums_use_float32_where_the_device_lacks_float64(monkeypatch):
    from spatialdomains.models import spotscape, trainer

    assert trainer.accumulation_dtype(torch.device("mps")) == torch.float32
    assert trainer.accumulation_dtype(torch.device("cpu")) == torch.float64
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(200, 8, generator=generator), torch.randn(200, 8, generator=generator)
    x = torch.rand(200, 30, generator=generator)
    decoder = torch.nn.Linear(8, 30)
    wide = (spotscape.similarity_asymmetry(z1, z2),
            spotscape.reconstruction_error(spotscape.ReconstructionTarget(x), [z1, z2], decoder))
    monkeypatch.setattr(spotscape, "accumulation_dtype", lambda device: torch.float32)
    narrow_target = spotscape.ReconstructionTarget(x)
    assert narrow_target.square_sum.dtype == torch.float32
    narrow = (spotscape.similarity_asymmetry(z1, z2),
              spotscape.reconstruction_error(narrow_target, [z1, z2], decoder))
    for a, b in zip(wide, narrow):
        assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_spotscape_denoised_layer_reaches_each_slice(small_sample):
    slices = [small_sample[:200].copy(), small_sample[200:].copy()]
    combined = sd.tl.spotscape(slices, n_top_genes=small_sample.n_vars, **FAST)
    assert "spotscape_denoised" in combined.layers
    for one in slices:
        assert one.layers["spotscape_denoised"].shape == (one.n_obs, one.n_vars)
        rows = (combined.obs["slice"] == one.uns["spatialdomains"]["slice"]).to_numpy()
        assert np.array_equal(one.layers["spotscape_denoised"], combined.layers["spotscape_denoised"][rows])


def test_the_seed_given_drives_the_clustering_and_is_recorded(sample, monkeypatch):
    from spatialdomains import cluster

    seeds = []
    real = cluster.kmeans
    monkeypatch.setattr(cluster, "kmeans", lambda x, k, random_state: seeds.append(random_state) or real(
        x, k, random_state=random_state))
    sd.find_domains(sample, "staig", 3, cluster_method="kmeans", random_state=5, **FAST)
    assert seeds == [5]
    record = sample.uns["spatialdomains"]
    assert record["random_state"] == 5 and record["cluster"]["random_state"] == 5
    assert record["staig"]["random_state"] == 5


def test_spotscape_prototypes_and_clustering_share_one_number_of_domains(small_sample):
    slices = [small_sample[:200].copy(), small_sample[200:].copy()]
    combined = sd.find_domains(slices, "spotscape", None, warmup_epochs=1, n_epochs=3, cluster_method="kmeans",
                               refine=False, progress=False)
    record = combined.uns["spatialdomains"]
    chosen = int(record["spotscape"]["training"]["prototype_choice"]["n_domains"])
    assert int(record["cluster"]["n_domains"]) == chosen == combined.obs["domain"].cat.categories.size
    assert "shared with training" in record["cluster"]["n_domains_chosen_by"]


def test_deterministic_mode_holds_for_the_run_only(sample):
    assert not torch.are_deterministic_algorithms_enabled()
    sd.tl.staig(sample, deterministic=True, **FAST)
    assert not torch.are_deterministic_algorithms_enabled()
    assert bool(sample.uns["spatialdomains"]["staig"]["deterministic"])


def test_protein_features_with_min_spots_zero_keep_undetected_proteins():
    counts = np.random.default_rng(0).poisson(3, (50, 6)).astype(np.float32)
    counts[:, 2] = 0
    assert sd.pp.adt_features(counts, min_spots=0).x.shape[1] == 6
    assert sd.pp.adt_features(counts, min_spots=1).x.shape[1] == 5


def test_options_are_checked_before_any_work_and_named(sample):
    with pytest.raises(InputError, match="unknown STAIG option\\(s\\) taux"):
        sd.tl.staig(sample, taux=3)
    with pytest.raises(InputError, match="unknown Spotscape option\\(s\\) library_size_key"):
        sd.tl.spotscape(sample, library_size_key="total_counts")
    with pytest.raises(InputError, match="cluster_method"):
        sd.find_domains(sample, "staig", 3, cluster_method="magic")
    with pytest.raises(InputError, match="n_domains"):
        sd.find_domains(sample, "staig", 1)
    assert "X_staig" not in sample.obsm


def test_a_config_object_with_overrides_is_one_way_to_give_options(sample):
    from dataclasses import replace

    config = sd.methods.StaigConfig(n_epochs=2, tau=5.0)
    sd.tl.staig(sample, config=replace(config, tau=3.0), n_neighbors=4, progress=False)
    parameters = sample.uns["spatialdomains"]["staig"]["parameters"]
    assert (parameters["tau"], parameters["n_neighbors"], parameters["n_epochs"]) == (3.0, 4, 2)
    with pytest.raises(InputError, match="StaigConfig"):
        sd.tl.staig(sample, config=sd.methods.SpotscapeConfig())


def test_a_new_method_is_one_registration(sample):
    """A method declared and registered in one place runs through every step of the shared pipeline."""
    from dataclasses import dataclass

    from spatialdomains import methods
    from spatialdomains.methods._expression import checked_inputs

    @dataclass(frozen=True)
    class SmoothedCountsConfig:
        layer: str | None = None
        n_neighbors: int = 4

    class SmoothedCounts(methods.Method):
        name, title, config_class, trains = "smoothed", "Smoothed", SmoothedCountsConfig, False

        def inputs(self, adata, config, run, timer):
            inputs = checked_inputs(adata, config, run.batch_key, config.n_neighbors)
            inputs.genes = np.arange(adata.n_vars)
            return inputs

        def train(self, inputs, config, run, device):
            return np.log1p(inputs.checked.counts[inputs.layout.order].toarray()[:, :5])

        def store(self, adata, inputs, result, config, run):
            adata.obsm[self.default_key] = inputs.to_input_rows(result)
            return inputs.record(run.batch_key)

    methods.register(SmoothedCounts())
    try:
        sd.find_domains(sample, "smoothed", 3, cluster_method="kmeans")
        assert sample.obsm["X_smoothed"].shape == (sample.n_obs, 5) and "domain" in sample.obs
        assert sample.uns["spatialdomains"]["smoothed"]["parameters"]["n_neighbors"] == 4
    finally:
        methods._REGISTRY.pop("smoothed")


def test_image_options_are_checked_up_front_and_an_image_array_is_not_copied_into_the_record(imaged_slices):
    adata = imaged_slices[0].copy()
    with pytest.raises(InputError, match="image_options: unknown option\\(s\\) imge_scale"):
        sd.tl.staig(adata, use_image=True, image_options={"imge_scale": 1.0}, **FAST)
    with pytest.raises(InputError, match="image_options: unknown option\\(s\\) device"):
        sd.tl.staig(adata, use_image=True, image_options={"device": "cpu"}, **FAST)
    picture = np.full((400, 400, 3), 200, dtype=np.uint8)
    with pytest.warns(UserWarning, match="random weights"):
        sd.tl.staig(adata, use_image=True, image_options={"image": picture, "image_scale": 0.25, **SMALL_IMAGE},
                    **FAST)
    recorded = adata.uns["spatialdomains"]["staig"]["parameters"]["image_options"]["image"]
    assert recorded == "array of shape (400, 400, 3)"


def test_a_number_of_domains_in_the_config_is_the_clusterings_too(small_sample):
    config = sd.methods.SpotscapeConfig(n_domains=3, prototypes=True, n_epochs=2, warmup_epochs=1)
    adata = small_sample.copy()
    sd.find_domains(adata, "spotscape", config=config, cluster_method="kmeans", refine=False, progress=False)
    assert adata.uns["spatialdomains"]["cluster"]["n_domains"] == 3
    assert list(adata.uns["spatialdomains"]["spotscape"]["training"]["prototype_counts"]) == [3, 5, 6]
    assert "preset" not in adata.uns["spatialdomains"]["spotscape"]  # a config object is taken as it is


def test_a_rerun_leaves_no_result_of_the_earlier_run_in_the_slices(small_sample):
    slices = [small_sample[:200].copy(), small_sample[200:].copy()]
    sd.find_domains(slices, "staig", 3, cluster_method="kmeans", refine=True, **FAST)
    assert all("domain_unrefined" in one.obs for one in slices)
    sd.find_domains(slices, "staig", 3, cluster_method="kmeans", refine=False, **FAST)
    assert not any("domain_unrefined" in one.obs for one in slices)


def test_options_that_need_training_are_refused_by_the_baseline():
    mdata = sd.datasets.simulate_multiomics(200, 3, seed=1)
    with pytest.raises(InputError, match="device does not apply to Baseline"):
        sd.tl.baseline(mdata, device="cpu")


def test_the_report_checks_its_options_before_reading_or_training(tmp_path):
    from spatialdomains.report.sample import analyse

    missing = str(tmp_path / "absent.h5ad")
    with pytest.raises(InputError, match="pvalue='Raw' is not one of adjusted, raw") as error:
        analyse(missing, pvalue="Raw")
    assert "absent.h5ad' does not exist" in str(error.value)  # every problem at once
    with pytest.raises(InputError, match="max_pvalue"):
        analyse(missing, max_pvalue=5)
    with pytest.raises(InputError, match="n_epochs does not apply to method='baseline', which trains no model"):
        analyse(missing, method="baseline", epochs=10)


def test_auto_clustering_is_each_methods_own(sample):
    """cluster_method='auto' means the paper's clusterer: k-means for Spotscape (an EEE mixture degenerates on its
    ReLU embedding), mclust for STAIG (or its Python twin, gmm, without R)."""
    spotscape = sd.find_domains(sample.copy(), "spotscape", 3, **FAST)
    assert spotscape.uns["spatialdomains"]["cluster"]["backend"] == "kmeans"
    staig = sd.find_domains(sample.copy(), "staig", 3, **FAST)
    assert staig.uns["spatialdomains"]["cluster"]["backend"] in ("mclust", "gmm")
