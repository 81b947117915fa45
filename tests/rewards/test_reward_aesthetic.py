import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffalign.errors import DiffalignError
from diffalign.rewards import AestheticMLP, AestheticScore, get
from diffalign.rewards.aesthetic import MLP_FILENAME, MLP_REPO

from .conftest import TINY_EMBED_DIM

LAION_SHAPES = {
    "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
    "layers.4.weight": (64, 128), "layers.4.bias": (64,),
    "layers.6.weight": (16, 64), "layers.6.bias": (16,),
    "layers.7.weight": (1, 16), "layers.7.bias": (1,),
}


def test_mlp_has_laion_state_dict_layout():
    state = AestheticMLP(768).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == LAION_SHAPES


@pytest.fixture(scope="module")
def mlp_state():
    torch.manual_seed(1)
    return AestheticMLP(TINY_EMBED_DIM).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_scores_with_local_weights(tiny_clip, mlp_state, tmp_path, suffix):
    name, clip_weights = tiny_clip
    path = tmp_path / f"mlp{suffix}"
    if suffix == ".pth":
        torch.save(mlp_state, path)
    else:
        save_file({k: v.contiguous() for k, v in mlp_state.items()}, str(path))
    reward = get("aesthetic", mlp_weights=str(path), model_name=name, pretrained=str(clip_weights),
                 embed_dim=TINY_EMBED_DIM)
    assert reward.differentiable
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    scores = reward(images)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(reward(images), scores)

    mlp = AestheticMLP(TINY_EMBED_DIM)
    mlp.load_state_dict(mlp_state)
    expected = mlp.eval()(F.normalize(reward.backbone.model.encode_image(reward.backbone.preprocess(images)), dim=-1))
    torch.testing.assert_close(scores, expected.squeeze(-1), atol=1e-5, rtol=1e-5)

    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in reward.parameters())
    reward.train()
    assert not reward.mlp.training


def test_offline_missing_mlp_weights_say_what_to_download(tiny_clip, hub_offline):
    name, clip_weights = tiny_clip
    with pytest.raises(DiffalignError) as info:
        AestheticScore(model_name=name, pretrained=str(clip_weights), embed_dim=TINY_EMBED_DIM)
    message = str(info.value)
    for part in (MLP_FILENAME, MLP_REPO, "mlp_weights=/path/to/", "HF_HUB_OFFLINE"):
        assert part in message, part


def test_bad_mlp_weights(tiny_clip, mlp_state, tmp_path):
    name, clip_weights = tiny_clip
    path = tmp_path / "mlp.pth"
    torch.save(mlp_state, path)
    with pytest.raises(DiffalignError, match="embed_dim=768"):  # weights are 16-dim
        AestheticScore(mlp_weights=path, model_name=name, pretrained=clip_weights)
    with pytest.raises(DiffalignError, match="does not exist"):
        AestheticScore(mlp_weights=tmp_path / "nope.pth", model_name=name, pretrained=clip_weights,
                       embed_dim=TINY_EMBED_DIM)


def test_embed_dim_must_match_clip(tiny_clip, tmp_path):
    name, clip_weights = tiny_clip
    path = tmp_path / "mlp32.pth"
    torch.save(AestheticMLP(32).state_dict(), path)
    with pytest.raises(DiffalignError, match="16-dim embeddings but the MLP expects embed_dim=32"):
        AestheticScore(mlp_weights=path, model_name=name, pretrained=clip_weights, embed_dim=32)
