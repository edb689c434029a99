"""STAIG's image path: patches, the published filter, ResNet backbones, BYOL, image-guided augmentation."""
import logging

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.nn import functional as F

import spatialdomains as sd
from spatialdomains.errors import InputError
from spatialdomains.graph import knn_graph, undirected_edges
from spatialdomains.image import byol, features, filters, patches, resnet
from spatialdomains.models import staig


# ---------------------------------------------------------------------------------------------------- filter

def _fft_reference(rgb, settings):
    """The published filter written with full FFTs and convolutions at ``patch_px``."""
    size = settings.patch_px
    up = F.interpolate(rgb.double(), size=(size, size), mode="bilinear", align_corners=False).round()
    grey = filters.to_grey(up)

    def blur(images, k):
        kernel = filters.gaussian_kernel(k)
        padded = F.pad(images[:, None], (k // 2,) * 4, mode="reflect")
        return F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, k)), kernel.view(1, 1, k, 1))[:, 0]

    blurred = blur(grey, settings.blur1).round().clamp(0, 255)
    first, end = settings.box
    mask = torch.zeros(size, size, dtype=torch.float64)
    mask[first:end, first:end] = 1
    spectrum = torch.fft.fftshift(torch.fft.fft2(blurred), dim=(-2, -1)) * mask
    restored = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).abs()
    return blur(restored, settings.blur2).clamp(0, 255).round()


def test_filter_equals_the_fft_formulation_up_to_8_bit_rounding():
    rgb = (torch.rand(3, 3, 60, 60, generator=torch.Generator().manual_seed(0)) * 255).round()
    settings = filters.FilterSettings()
    difference = (filters.filter_patches(rgb, settings) - _fft_reference(rgb, settings)).abs()
    assert difference.max() <= 1 and difference.mean() < 0.2


def test_published_box_is_30_by_30_around_the_zero_frequency_and_scales_with_the_patch():
    assert filters.FilterSettings().box == (245, 275)
    assert filters.FilterSettings().frequencies.tolist() == list(range(-11, 19))
    first, end = filters.FilterSettings(patch_px=256).box
    assert first <= 128 < end and abs((end - first) - 15) <= 1
    with pytest.raises(InputError, match="zero frequency"):
        filters.FilterSettings(band=(300, 320))
    with pytest.raises(InputError, match="odd"):
        filters.FilterSettings(blur1=4)


def test_mask_keeps_the_zero_frequency_so_a_flat_patch_passes_unchanged():
    flat = torch.full((2, 3, 40, 40), 137.0)
    out = filters.filter_patches(flat, filters.FilterSettings(), out_px=64)
    assert out.shape == (2, 64, 64)
    assert torch.all(out == 137.0)


def test_filter_removes_cell_scale_texture_and_keeps_coarse_structure():
    size = 512
    x = torch.arange(size, dtype=torch.float64)
    fine = 128 + 100 * torch.sin(2 * torch.pi * x / 8)      # 64 cycles per patch: outside the box
    coarse = 128 + 100 * torch.sin(2 * torch.pi * x / 64)   # 8 cycles per patch: inside
    images = torch.stack([fine.expand(size, -1), coarse.expand(size, -1)])[:, None].expand(-1, 3, -1, -1)
    out = filters.filter_patches(images.float(), filters.FilterSettings())
    assert out[0].std() < 2 and out[1].std() > 20


def test_gaussian_kernels_follow_opencv_sigma():
    assert filters.opencv_sigma(5) == pytest.approx(1.1)
    assert filters.opencv_sigma(15) == pytest.approx(2.6)
    blur = filters.blur_matrix(20, 5)
    assert torch.allclose(blur.sum(dim=1), torch.ones(20, dtype=torch.float64))
    # reflect-101 at the first row: taps at -2, -1 mirror to 2, 1 (the edge pixel itself is not repeated)
    kernel = filters.gaussian_kernel(5)
    assert blur[0, 1] == pytest.approx(kernel[1] + kernel[3])


# --------------------------------------------------------------------------------------------------- patches

def _dot_image(height, width, centre, radius=4):
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    rows, cols = np.mgrid[0:height, 0:width]
    image[(rows - centre[1]) ** 2 + (cols - centre[0]) ** 2 <= radius**2] = 0
    return image


@pytest.mark.filterwarnings("ignore:image patches are only")
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_patches_are_centred_on_the_spot_at_every_resolution(scale):
    spot = np.array([[300.0, 180.0]])                      # full-resolution (x, y)
    image = _dot_image(int(500 * scale), int(600 * scale), spot[0] * scale, radius=max(1, int(8 * scale)))
    side = patches.patch_side(scale, 40.0, spot, patch_factor=3.5)
    assert side == round(3.5 * 40 * scale)
    (batch, inside), = list(patches.crop_patches(image, spot * scale, side))
    assert batch.shape == (1, 3, side, side)
    centre = batch[0, 0, side // 2 - 1:side // 2 + 1, side // 2 - 1:side // 2 + 1]
    assert torch.all(centre == 0)                          # the dark dot sits in the middle
    assert batch[0, 0, 0, 0] == 255 and batch[0, 0, -1, -1] == 255
    assert inside.tolist() == [[0, side, 0, side]]


def test_patches_crossing_the_image_edge_are_padded_white_not_truncated():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    (batch, inside), = list(patches.crop_patches(image, np.array([[5.0, 5.0]]), 20))
    assert batch.shape == (1, 3, 20, 20)
    assert torch.all(batch[0, :, :5, :] == 255) and torch.all(batch[0, :, :, :5] == 255)
    assert torch.all(batch[0, :, 5:, 5:] == 0)
    assert inside.tolist() == [[5, 20, 5, 20]]


def test_truncate_border_filters_only_the_part_on_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    (batch, inside), = list(patches.crop_patches(image, np.array([[5.0, 5.0]]), 30))
    settings = filters.FilterSettings(patch_px=128)
    truncated = filters.filter_patches(batch, settings, inside=inside)
    start = int(inside[0, 0])
    alone = filters.filter_patches(batch[:, :, start:, start:], settings)
    assert torch.equal(truncated, alone)
    assert not torch.equal(truncated, filters.filter_patches(batch, settings))


def test_spots_outside_the_image_are_an_error_naming_the_scale():
    with pytest.raises(InputError, match="image_scale"):
        list(patches.crop_patches(np.zeros((50, 50, 3)), np.array([[500.0, 500.0]]), 10))


def test_patch_side_without_scalefactors_uses_spot_spacing_and_small_patches_warn():
    grid = np.stack(np.meshgrid(np.arange(10) * 100.0, np.arange(10) * 100.0), -1).reshape(-1, 2)
    with pytest.warns(UserWarning, match="no cellular texture"):
        side = patches.patch_side(0.1, None, grid)
    assert side == round(3.5 * 1.055 * 100 * 0.1)


def test_find_image_prefers_hires_with_its_scale_factor_and_explicit_images_win():
    adata = ad.AnnData(np.zeros((2, 1)))
    adata.uns["spatial"] = {"lib": {"images": {"lowres": np.zeros((5, 5, 3)), "hires": np.ones((20, 20, 3))},
                                    "scalefactors": {"tissue_hires_scalef": 0.2, "tissue_lowres_scalef": 0.05,
                                                     "fiducial_diameter_fullres": 30.0}}}
    found = features.find_image(adata)
    assert (found.source, found.scale, found.fiducial_diameter) == ("hires", 0.2, 30.0)
    given = features.find_image(adata, np.zeros((4, 4, 3)), image_scale=0.5)
    assert (given.source, given.scale) == ("array given", 0.5)
    assert features.find_image(ad.AnnData(np.zeros((2, 1)))) is None


# ---------------------------------------------------------------------------------------------------- ResNet

@pytest.mark.parametrize("architecture, n_parameters, dim", [
    ("resnet18", 11_689_512, 512), ("resnet34", 21_797_672, 512), ("resnet50", 25_557_032, 2048)])
def test_resnets_match_torchvision_sizes_and_output_pooled_features(architecture, n_parameters, dim):
    model = resnet.ResNet(architecture).eval()
    classifier = dim * 1000 + 1000                       # torchvision's fc, left out here
    assert sum(p.numel() for p in model.parameters()) + classifier == n_parameters
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, dim)
    names = model.state_dict()
    assert "layer2.0.downsample.1.running_var" in names and "bn1.num_batches_tracked" in names
    if architecture == "resnet50":
        assert names["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)


def test_torchvision_layout_weights_load_and_mismatches_are_named(tmp_path):
    source = resnet.ResNet("resnet18")
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.running_mean)
    state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    loaded = resnet.build_backbone("resnet18", path).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source.eval()(x))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    resnet.build_backbone("resnet18", tmp_path / "wrapped.pth")
    with pytest.raises(InputError, match="does not match a torchvision resnet50"):
        resnet.build_backbone("resnet50", path)
    with pytest.warns(UserWarning, match="random weights"):
        resnet.build_backbone("resnet18")


# ------------------------------------------------------------------------------------------------------ BYOL

def test_augmentation_without_random_operations_is_the_normalised_input():
    still = byol.Augmentation(output_px=32, jitter_probability=0, grey_probability=0, blur_probability=0,
                              crop_scale=(1, 1), crop_ratio=(1, 1), flip_probability=0, rotation_degrees=0)
    images = torch.rand(4, 3, 32, 32)
    mean = torch.tensor(byol.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(byol.IMAGENET_STD).view(1, 3, 1, 1)
    out = still(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out * std + mean, images, atol=1e-5)
    flipped = byol.Augmentation(**{**still.__dict__, "flip_probability": 1.0})
    out = flipped(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out * std + mean, images.flip(-1).flip(-2), atol=1e-5)


def test_augmented_views_differ_per_image_and_have_the_output_size():
    images = torch.rand(6, 3, 40, 40)
    out = byol.Augmentation(output_px=24)(images, torch.Generator().manual_seed(1))
    assert out.shape == (6, 3, 24, 24) and torch.isfinite(out).all()
    again = byol.Augmentation(output_px=24)(images, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_byol_loss_decreases_on_a_tiny_set_and_is_reproducible():
    generator = torch.Generator().manual_seed(0)
    tiles = (torch.rand(24, 48, 48, generator=generator) * 255).to(torch.uint8)
    augmentation = byol.Augmentation(output_px=48)

    def run():
        torch.manual_seed(0)
        model = byol.BYOL(resnet.ResNet("resnet18"), 512)
        return byol.train_byol(model, tiles, augmentation, epochs=4, batch_size=12, device=torch.device("cpu"),
                               progress=False), model

    losses, model = run()
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert losses == run()[0]
    online = next(model.backbone.parameters())
    target = next(model.target.parameters())
    assert not torch.equal(online, target) and not target.requires_grad


def test_a_last_batch_of_one_is_dropped():
    tiles = torch.zeros(5, 32, 32, dtype=torch.uint8)
    model = byol.BYOL(resnet.ResNet("resnet18"), 512)
    losses = byol.train_byol(model, tiles, byol.Augmentation(output_px=32), batch_size=4,
                             device=torch.device("cpu"), progress=False)
    assert len(losses) == 1


# ------------------------------------------------------------------------------------ image-guided augmentation

def test_image_edge_probabilities_are_symmetric_nonnegative_and_row_normalised():
    rng = np.random.default_rng(0)
    points = rng.random((300, 2))
    image = rng.random((300, 8))
    adjacency = knn_graph(points, 5)
    pairs = undirected_edges(adjacency)
    probability = staig.edge_drop_probabilities(None, adjacency, "image", image_features=image)
    assert probability.shape == (len(pairs),) and np.all(probability >= 0) and np.all(probability <= 1)
    # The directed values p_ij = d_ij / Σ_k d_ik sum to one over each neighbourhood; p_e is their mean.
    coo = sp.coo_matrix(adjacency)
    distance = np.linalg.norm(image[coo.row] - image[coo.col], axis=1)
    directed = sp.csr_matrix((distance / np.bincount(coo.row, distance)[coo.row], (coo.row, coo.col)))
    assert np.allclose(np.asarray(directed.sum(axis=1)).ravel(), 1.0)
    expected = 0.5 * (np.asarray(directed[pairs[:, 0], pairs[:, 1]]).ravel()
                      + np.asarray(directed[pairs[:, 1], pairs[:, 0]]).ravel())
    assert np.allclose(probability, expected, atol=1e-6)
    # Renumbering the spots gives every edge the same probability (no dependence on node order).
    order = rng.permutation(300)
    renumbered = staig.edge_drop_probabilities(None, knn_graph(points[order], 5), "image",
                                               image_features=image[order])
    lookup = {tuple(sorted(order[p])): q for p, q in zip(undirected_edges(knn_graph(points[order], 5)), renumbered)}
    assert np.allclose([lookup[tuple(p)] for p in pairs], probability, atol=1e-6)


def test_identical_looking_neighbours_are_never_dropped():
    points = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=float)
    image = np.array([[0.0], [0.0], [5.0], [5.0]])
    adjacency = knn_graph(points, 1)
    probability = staig.edge_drop_probabilities(None, adjacency, "image", image_features=image)
    same = [np.all(image[a] == image[b]) for a, b in undirected_edges(adjacency)]
    assert np.all(probability[same] == 0) and np.all(probability[~np.array(same)] > 0)


def test_pseudo_labels_take_same_label_spots_out_of_the_negatives():
    n = 60
    generator = torch.Generator().manual_seed(0)
    h1 = torch.randn(n, 8, dtype=torch.float64, generator=generator)
    h2 = torch.randn(n, 8, dtype=torch.float64, generator=generator)
    pairs = torch.as_tensor(undirected_edges(knn_graph(np.random.default_rng(0).random((n, 2)), 3)))
    edges = torch.cat([pairs.T, pairs.T.flip(0)], dim=1)
    loss = lambda labels: staig.neighbour_contrastive_loss(h1, h2, (edges, edges), 0.5,  # noqa: E731
                                                           pseudo_labels=labels)
    distinct = torch.arange(n)
    assert torch.allclose(loss(distinct), loss(None))        # nobody shares a label: nothing removed
    grouped = torch.arange(n) % 4
    assert loss(grouped) < loss(None)                         # smaller denominators
    labels = staig.image_pseudo_labels(np.random.default_rng(0).random((n, 5)), n_labels=7)
    assert len(np.unique(labels)) == 7


# -------------------------------------------------------------------------------------------- API and fallback

SMALL = {"input_px": 32, "backbone": "resnet18", "patch_px": 64, "batch_size": 16}


@pytest.fixture(scope="module")
def imaged():
    adata = sd.datasets.simulate_visium(150, 3, seed=3, image=True)
    with pytest.warns(UserWarning, match="random weights"):
        sd.tl.image_features(adata, progress=False, **SMALL)
    return adata


def test_image_features_are_stored_with_provenance_and_reused(imaged, caplog, tmp_path):
    record = imaged.uns["spatialdomains"]["image_features"]
    assert imaged.obsm["X_image"].shape == (imaged.n_obs, 64)
    assert record["settings"]["backbone"] == "resnet18" and record["settings"]["weights"] == "random initialisation"
    assert list(record["image_sources"]) == ["hires"]
    assert record["patch_sides_px"][0] == round(3.5 * 105.5 * 0.25)
    path = tmp_path / "imaged.h5ad"
    imaged.write_h5ad(path)
    reread = ad.read_h5ad(path)
    before = reread.obsm["X_image"].copy()
    with caplog.at_level(logging.INFO, logger="spatialdomains"):
        sd.tl.image_features(reread, progress=False, **SMALL)
    assert "reusing" in caplog.text
    assert np.array_equal(reread.obsm["X_image"], before)


def test_own_features_are_only_standardised_and_reduced(small_sample):
    adata = small_sample.copy()
    own = np.random.default_rng(0).random((adata.n_obs, 100))
    sd.tl.image_features(adata, features=own, n_components=10)
    assert adata.obsm["X_image"].shape == (adata.n_obs, 10)
    assert np.allclose(adata.obsm["X_image"].mean(axis=0), 0, atol=1e-5)
    adata.obsm["own"] = own
    sd.tl.image_features(adata, features="own", n_components=5, key_added="X_image_own")
    assert adata.obsm["X_image_own"].shape == (adata.n_obs, 5)
    with pytest.raises(InputError, match="obsm\\['missing'\\] does not exist"):
        sd.tl.image_features(adata, features="missing")


def test_staig_with_image_drops_edges_by_image_and_debiases(imaged):
    adata = imaged.copy()
    sd.tl.staig(adata, use_image=True, n_epochs=3, progress=False)
    record = adata.uns["spatialdomains"]["staig"]
    assert record["image_key"] == "X_image"
    assert record["parameters"]["edge_drop"] == "image"
    assert bool(record["training"]["debiased"]) and bool(record["training"]["image"])
    assert np.isfinite(adata.obsm["X_staig"]).all()


def test_staig_computes_missing_features_from_the_image(small_sample):
    adata = sd.datasets.simulate_visium(120, 3, seed=4, image=True)
    with pytest.warns(UserWarning, match="random weights"):
        sd.tl.staig(adata, use_image=True, image_options=SMALL, n_epochs=2, progress=False)
    assert "X_image" in adata.obsm and adata.uns["spatialdomains"]["staig"]["image_key"] == "X_image"


def test_without_an_image_staig_falls_back_to_gene_mode_and_says_so(small_sample, caplog):
    adata = small_sample.copy()
    with caplog.at_level(logging.WARNING, logger="spatialdomains"):
        sd.tl.staig(adata, use_image=True, n_epochs=2, progress=False)
    assert "no tissue image" in caplog.text and "gene expression only" in caplog.text
    record = adata.uns["spatialdomains"]["staig"]
    assert "image_key" not in record and record["parameters"]["edge_drop"] == "fixed"
    with pytest.raises(InputError, match="no tissue image"):
        sd.tl.image_features(adata)


def test_integration_with_images_uses_per_slice_features_without_debiasing():
    slices = [sd.datasets.simulate_visium(100, 3, seed=s, image=True) for s in (5, 6)]
    with pytest.warns(UserWarning, match="random weights"):
        combined = sd.tl.staig(slices, use_image=True, image_options=SMALL, n_epochs=2, progress=False)
    record = combined.uns["spatialdomains"]["staig"]
    assert record["image_key"] == "X_image" and not bool(record["training"]["debiased"])
    assert all("X_image" in one.obsm and "X_staig" in one.obsm for one in slices)
