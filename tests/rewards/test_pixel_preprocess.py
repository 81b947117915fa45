"""The torch preprocessing of the hub rewards against the reference PIL pipelines, on random images.

Stated tolerance (pixel units, before normalisation): max |ours - reference| <= 1.5/255 and mean
<= 0.5/255. The residual is PIL's 8-bit rounding after each resampling pass; measured here:
max 1.1/255, mean 0.3/255 (transformers' CLIPImageProcessorPil and CLIPImageProcessor alike).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from diffalign.rewards.pixel_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PixelPreprocess, PreprocessConfig

MAX_TOL, MEAN_TOL = 1.5 / 255, 0.5 / 255
# square, upsampled (generated 64 px), portrait, landscape, the embedded 8x8, large
SIZES = [(512, 512), (64, 64), (300, 200), (256, 384), (8, 8), (1024, 768)]


def _images(h, w, seed):
    """uint8-exact [0, 1] images, half white noise (the worst case for resampling), half smooth."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (1, 3, h, w), generator=g).float() / 255
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")
    return torch.cat([noise, (smooth * 255).round() / 255])


def _pil(images):
    return [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in images]


def _clip_processor(cls):
    return cls(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
               image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))


@pytest.mark.parametrize("processor_class", ["CLIPImageProcessorPil", "CLIPImageProcessor"])
def test_shortest_edge_matches_transformers_clip_processor(processor_class):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, processor_class):
        pytest.skip(f"this transformers has no {processor_class}")
    processor = _clip_processor(getattr(transformers, processor_class))
    ours = PixelPreprocess(PreprocessConfig.from_image_processor(processor))
    assert ours.config.size == 224 and ours.config.crop == (224, 224) and ours.config.interpolation == "bicubic"
    for i, (h, w) in enumerate(SIZES):
        images = _images(h, w, seed=i)
        reference = processor(images=_pil(images), return_tensors="pt")["pixel_values"]
        got = ours(images)
        assert got.shape == reference.shape == (2, 3, 224, 224)
        gap = ((got - reference) * ours.std).abs()  # back to pixel units
        assert gap.max() <= MAX_TOL and gap.mean() <= MEAN_TOL, (h, w, gap.max().item() * 255)


def test_longest_side_matches_open_clip_longest_transform():
    """HPSv2's evaluation transform: longer side to 224 (bicubic), black padding, OpenAI mean/std."""
    transform = pytest.importorskip("open_clip.transform")
    reference_transform = transform.image_transform(224, is_train=False, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                                                    resize_mode="longest", interpolation="bicubic")
    ours = PixelPreprocess(PreprocessConfig(size=224, crop=(224, 224), mode="longest"))
    for i, (h, w) in enumerate(SIZES):
        images = _images(h, w, seed=10 + i)
        reference = torch.stack([reference_transform(p) for p in _pil(images)])
        got = ours(images)
        assert got.shape == reference.shape == (2, 3, 224, 224)
        gap = ((got - reference) * ours.std).abs()
        assert gap.max() <= MAX_TOL and gap.mean() <= MEAN_TOL, (h, w, gap.max().item() * 255)


def test_round_crop_matches_torchvision_resize_and_center_crop():
    """ImageReward's transform: torchvision Resize(224, bicubic) + CenterCrop(224) on PIL images."""
    transforms = pytest.importorskip("torchvision.transforms")
    reference_transform = transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224),
        transforms.ToTensor(), transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    ours = PixelPreprocess(PreprocessConfig(size=224, crop=(224, 224), crop_offset="round"))
    for i, (h, w) in enumerate(SIZES + [(225, 300), (300, 227)]):  # odd margins: torchvision rounds the offset
        images = _images(h, w, seed=20 + i)
        reference = torch.stack([reference_transform(p) for p in _pil(images)])
        gap = ((ours(images) - reference) * ours.std).abs()
        assert gap.max() <= MAX_TOL and gap.mean() <= MEAN_TOL, (h, w, gap.max().item() * 255)


def test_single_pass_resize_would_miss_the_tolerance():
    """Why two passes: one 2-D interpolate (no clamp between width and height) misses PIL on noise."""
    import torch.nn.functional as F

    images = _images(64, 64, seed=0)[:1]
    reference = torch.from_numpy(np.asarray(_pil(images)[0].resize((224, 224), Image.BICUBIC)).copy())
    reference = reference.permute(2, 0, 1)[None].float() / 255
    one_pass = F.interpolate(images, size=(224, 224), mode="bicubic", antialias=True).clamp(0, 1)
    two_pass = PixelPreprocess(PreprocessConfig(size=224, crop=(224, 224))).resize_and_crop(images)
    assert (one_pass - reference).abs().max() > 5 / 255
    assert (two_pass - reference).abs().max() <= MAX_TOL


def test_gradients_reach_every_pixel_and_grey_is_repeated():
    ours = PixelPreprocess(PreprocessConfig(size=32, crop=(32, 32)))
    images = torch.rand(2, 1, 20, 28, requires_grad=True)
    out = ours(images)
    assert out.shape == (2, 3, 32, 32)
    out.square().sum().backward()
    assert torch.isfinite(images.grad).all() and (images.grad.abs() > 0).float().mean() > 0.5
    torch.testing.assert_close(ours(images.detach()), ours(images.detach().repeat(1, 3, 1, 1)))
