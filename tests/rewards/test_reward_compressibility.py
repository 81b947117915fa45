import io

import pytest
import torch
from PIL import Image

from diffalign.errors import DiffalignError
from diffalign.rewards import get, jpeg_sizes_kb


@pytest.mark.parametrize("channels", [1, 3])
def test_constant_image_is_more_compressible_than_noise(channels):
    torch.manual_seed(0)
    constant = torch.full((2, channels, 32, 32), 0.5)
    noise = torch.rand(2, channels, 32, 32)
    reward = get("compressibility")
    scores = reward(torch.cat([constant, noise]))
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert scores[:2].min() > scores[2:].max()
    assert (scores < 0).all()


def test_incompressibility_is_minus_compressibility():
    images = torch.rand(3, 3, 16, 16)
    compress, incompress = get("compressibility"), get("incompressibility")
    torch.testing.assert_close(incompress(images), -compress(images))
    assert not compress.differentiable and not incompress.differentiable


def test_size_matches_a_pil_jpeg_of_the_quantised_image():
    image = torch.rand(1, 3, 12, 20)
    pixels = (image[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    assert jpeg_sizes_kb(image).item() == pytest.approx(buffer.tell() / 1000)


def test_bad_channel_count_is_an_error():
    with pytest.raises(DiffalignError, match="1 .*or 3"):
        get("compressibility")(torch.rand(1, 2, 8, 8))
