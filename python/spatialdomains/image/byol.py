"""BYOL self-supervised training of a backbone on filtered patches (Grill et al. 2020), as STAIG publishes it.

Online network: backbone → projector → predictor; target network: an exponential moving average of backbone and
projector (no gradient). Loss: 2 − 2·cos(prediction of one view, target projection of the other), both ways.
Augmentations are written in torch and applied to a whole batch at once, each with its own random draw per
image: colour jitter (p 0.3), greyscale (p 0.2), Gaussian blur 3×3 with σ ~ U[1, 2] (p 0.2), then one resampling
that combines horizontal and vertical flips (p 0.5 each), a rotation uniform in 0–360° and a random resized crop
(scale 0.08–1, aspect 3/4–4/3), then ImageNet normalisation.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .._utils import progress_steps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """The published BYOL view augmentations and their probabilities."""

    output_px: int = 256
    jitter_probability: float = 0.3
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grey_probability: float = 0.2
    blur_probability: float = 0.2
    blur_sigma: tuple[float, float] = (1.0, 2.0)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    rotation_degrees: float = 360.0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One augmented view of n × 3 × H × W images in [0, 1], normalised, at ``output_px``."""
        draw = lambda *shape: torch.rand(*shape, generator=generator, device=images.device)  # noqa: E731
        n = images.shape[0]
        x = images.clone()
        chosen = draw(n) < self.jitter_probability
        if chosen.any():
            x[chosen] = self._jitter(x[chosen], draw)
        chosen = draw(n) < self.grey_probability
        x[chosen] = _grey(x[chosen]).expand(-1, 3, -1, -1)
        chosen = draw(n) < self.blur_probability
        if chosen.any():
            sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * draw(int(chosen.sum()))
            x[chosen] = _blur3(x[chosen], sigma)
        x = self._resample(x, draw)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _jitter(self, x: torch.Tensor, draw) -> torch.Tensor:
        """Brightness, contrast, saturation (factors in [1 − s, 1 + s]) and hue (shift in [−h, h] turns)."""
        n = x.shape[0]
        factor = lambda strength: (1 - strength + 2 * strength * draw(n)).view(n, 1, 1, 1)  # noqa: E731
        x = (x * factor(self.brightness)).clamp(0, 1)
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (mean + factor(self.contrast) * (x - mean)).clamp(0, 1)
        x = (_grey(x) + factor(self.saturation) * (x - _grey(x))).clamp(0, 1)
        return _rotate_hue(x, (2 * draw(n) - 1) * self.hue).clamp(0, 1)

    def _resample(self, x: torch.Tensor, draw) -> torch.Tensor:
        """Flips, rotation and random resized crop as one affine map per image (bilinear, black outside)."""
        n, _, height, width = x.shape
        crop_w, crop_h, centre_x, centre_y = self._crop_boxes(n, height, width, draw)
        angle = math.radians(self.rotation_degrees) * draw(n)
        flip_x = torch.where(draw(n) < self.flip_probability, -1.0, 1.0)
        flip_y = torch.where(draw(n) < self.flip_probability, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output (u, v) in [-1, 1]² → crop box → undo the rotation → undo the flips: input coordinates.
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = flip_x * cos * crop_w, flip_x * -sin * crop_h
        theta[:, 0, 2] = flip_x * (cos * centre_x - sin * centre_y)
        theta[:, 1, 0], theta[:, 1, 1] = flip_y * sin * crop_w, flip_y * cos * crop_h
        theta[:, 1, 2] = flip_y * (sin * centre_x + cos * centre_y)
        grid = F.affine_grid(theta, [n, 3, self.output_px, self.output_px], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _crop_boxes(self, n: int, height: int, width: int, draw, tries: int = 10):
        """torchvision's RandomResizedCrop draw (10 tries, else the whole image), in normalised half-sizes
        and centres."""
        area = self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * draw(n, tries)
        log_low, log_high = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_low + (log_high - log_low) * draw(n, tries))
        crop_w = torch.round(torch.sqrt(area * height * width * ratio))
        crop_h = torch.round(torch.sqrt(area * height * width / ratio))
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = torch.argmax(fits.to(torch.int8), dim=1)
        found = fits.any(dim=1)
        pick = lambda values, fallback: torch.where(found, values.gather(1, first[:, None])[:, 0], fallback)  # noqa: E731
        crop_w, crop_h = pick(crop_w, torch.full_like(found, width, dtype=area.dtype)), \
            pick(crop_h, torch.full_like(found, height, dtype=area.dtype))
        left = torch.floor(draw(n) * (width - crop_w + 1))
        top = torch.floor(draw(n) * (height - crop_h + 1))
        centre_x = (left + crop_w / 2) / width * 2 - 1
        centre_y = (top + crop_h / 2) / height * 2 - 1
        return crop_w / width, crop_h / height, centre_x, centre_y


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Shift hue by rotating chroma about the grey axis in YIQ space (a close, vectorised stand-in for HSV)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device, dtype=x.dtype)
    angle = 2 * math.pi * turns
    rotation = torch.zeros(len(turns), 3, 3, device=x.device, dtype=x.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    transform = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("nij,njhw->nihw", transform, x)


def _blur3(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3×3 Gaussian blur with one σ per image (reflect borders), as one grouped convolution."""
    n, channels, height, width = x.shape
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], device=x.device)[None, :] / (2 * sigma[:, None] ** 2))
    taps = taps / taps.sum(dim=1, keepdim=True)
    kernels = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(channels, dim=0)[:, None]
    padded = F.pad(x.reshape(1, n * channels, height, width), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernels, groups=n * channels).view(n, channels, height, width)


def _mlp(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class BYOL(nn.Module):
    """Online backbone + projector + predictor, and the EMA target (backbone + projector, β = ``decay``)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, decay: float = 0.99) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = _mlp(feature_dim)
        self.predictor = _mlp(256)
        self.target = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(self.projector))
        self.target.requires_grad_(False)
        self.decay = decay

    def loss(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """Symmetric BYOL loss, averaged over the batch."""
        views = torch.cat([view_a, view_b])
        predictions = self.predictor(self.projector(self.backbone(views)))
        with torch.no_grad():
            targets = self.target(views)
        n = view_a.shape[0]
        swapped = torch.cat([targets[n:], targets[:n]])
        cosine = F.cosine_similarity(predictions, swapped, dim=1)
        return (2 - 2 * cosine).view(2, n).sum(dim=0).mean()

    @torch.no_grad()
    def update_target(self) -> None:
        online = list(self.backbone.parameters()) + list(self.projector.parameters())
        for target, source in zip(self.target.parameters(), online):
            target.mul_(self.decay).add_(source, alpha=1 - self.decay)


def train_byol(model: BYOL, patches: torch.Tensor, augmentation: Augmentation, *, epochs: int = 1,
               batch_size: int = 43, learning_rate: float = 3e-4, seed: int = 42, device: torch.device,
               progress: bool = True) -> list[float]:
    """Train ``model`` on uint8 grey patches (n × H × W) for ``epochs`` shuffled passes; the loss of each step.

    Batches of one image are dropped (BatchNorm needs two).
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(list(model.backbone.parameters()) + list(model.projector.parameters())
                                 + list(model.predictor.parameters()), lr=learning_rate)
    model.train()
    losses = []
    n = patches.shape[0]
    steps = [order[i:i + batch_size] for _ in range(epochs)
             for order in [torch.randperm(n, generator=order_generator)] for i in range(0, n, batch_size)]
    for batch in progress_steps(steps, "BYOL", unit="steps", enabled=progress):
        if len(batch) < 2:
            continue
        images = as_rgb_unit(patches[batch].to(device))
        loss = model.loss(augmentation(images, generator), augmentation(images, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_target()
        losses.append(float(loss.detach()))
    return losses


def as_rgb_unit(grey: torch.Tensor) -> torch.Tensor:
    """uint8 grey patches n × H × W → float n × 3 × H × W in [0, 1] (the grey channel copied three times)."""
    return (grey.float() / 255.0)[:, None].expand(-1, 3, -1, -1).contiguous()


@torch.no_grad()
def embed(backbone: nn.Module, patches: torch.Tensor, *, batch_size: int = 64, device: torch.device,
          progress: bool = True) -> torch.Tensor:
    """Backbone features of un-augmented, ImageNet-normalised patches, in eval mode (n × feature_dim, CPU)."""
    backbone.eval()
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    chunks = []
    for first in progress_steps(range(0, patches.shape[0], batch_size), "image features", unit="batches",
                                enabled=progress):
        images = as_rgb_unit(patches[first:first + batch_size].to(device))
        chunks.append(backbone((images - mean) / std).float().cpu())
    return torch.cat(chunks)
