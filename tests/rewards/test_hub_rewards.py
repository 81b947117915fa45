"""pickscore, clipscore, hpsv2 and imagereward on tiny random models of their real architectures (no hub).

Each model is saved as its hub repo lays it out and loaded through ``path=``, the same
``from_pretrained`` / checkpoint code path a hub id takes once downloaded. The scores are checked
against the reference pipeline (transformers processor / open_clip transform on PIL images, then the
model's own forward), within the preprocessing tolerance of ``test_pixel_preprocess.py``.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from diffalign.errors import DiffalignError
from diffalign.rewards import get

from .tiny_hub_models import TINY_OPEN_CLIP, save_tiny_hf_clip, save_tiny_hps_checkpoint, save_tiny_imagereward

PROMPTS = ["the red cat", "a dog and the sea", "the red cat", "an orange"]


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {
        "clip": save_tiny_hf_clip(root / "clip", seed=0),
        "pick_model": save_tiny_hf_clip(root / "pick-model", seed=1, with_processor=False),
        "hps": save_tiny_hps_checkpoint(root / "hps", seed=2),
        "imagereward": save_tiny_imagereward(root / "imagereward", seed=3),
    }


@pytest.fixture(scope="module")
def rewards(hub_dirs):
    return {
        "pickscore": get("pickscore", path=str(hub_dirs["pick_model"]), processor=str(hub_dirs["clip"])),
        "clipscore": get("clipscore", path=str(hub_dirs["clip"])),
        "hpsv2": get("hpsv2", path=str(hub_dirs["hps"].parent), model_name=TINY_OPEN_CLIP),
        "imagereward": get("imagereward", path=str(hub_dirs["imagereward"])),
    }


NAMES = ["pickscore", "clipscore", "hpsv2", "imagereward"]


def _images(n=4, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255)


def _pil(images):
    return [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in images]


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape_flags_and_batch_invariance(rewards, name):
    reward = rewards[name]
    assert reward.needs_prompts and reward.differentiable and not reward.training
    assert all(not p.requires_grad for p in reward.parameters())
    images = _images()
    scores = reward(images, prompts=PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    # a score does not depend on its batch mates (up to float32 rounding of batched matmuls: 1e-4 relative)
    for i in range(4):
        torch.testing.assert_close(reward(images[i:i + 1], prompts=PROMPTS[i:i + 1]), scores[i:i + 1],
                                   atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reward(images.flip(0), prompts=PROMPTS[::-1]), scores.flip(0), atol=1e-4, rtol=1e-4)
    with pytest.raises(DiffalignError, match=f"reward '{name}' needs prompts"):
        reward(images)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_sensitivity(rewards, name):
    reward = rewards[name]
    images = _images(2).repeat(3, 1, 1, 1)[:4]
    one = reward(images, prompts=["the red cat"] * 4)
    other = reward(images, prompts=["a dog and the sea"] * 4)
    assert (one - other).abs().min() > 1e-4
    # same image, same prompt: same score, whichever position
    torch.testing.assert_close(one[0], one[2])


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_pixels(rewards, name):
    reward = rewards[name]
    images = torch.rand(2, 3, 40, 56).requires_grad_(True)  # non-square: resize and crop/pad in the graph
    reward(images, prompts=PROMPTS[:2]).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert (images.grad.flatten(1).abs().sum(dim=1) > 0).all()
    grey = torch.rand(2, 1, 8, 8)  # the embedded digits: one channel, 8x8
    torch.testing.assert_close(reward(grey, prompts=PROMPTS[:2]), reward(grey.repeat(1, 3, 1, 1), prompts=PROMPTS[:2]))


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_weights_score_close_to_float32(rewards, hub_dirs, name):
    path = {"pickscore": hub_dirs["pick_model"], "clipscore": hub_dirs["clip"], "hpsv2": hub_dirs["hps"],
            "imagereward": hub_dirs["imagereward"]}[name]
    options = {"pickscore": {"processor": str(hub_dirs["clip"])}, "hpsv2": {"model_name": TINY_OPEN_CLIP}}.get(name, {})
    half = get(name, path=str(path), dtype="bfloat16", **options)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    images = _images(2)
    full = rewards[name](images, prompts=PROMPTS[:2])
    low = half(images, prompts=PROMPTS[:2])
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    scale = full.abs().max().item() + 1.0
    # bf16 keeps ~3 significant digits per op; the tiny random towers (and imagereward's amplified head)
    # compound that, so this checks the dtype path, not bf16 accuracy of the released models
    torch.testing.assert_close(low, full, atol=0.15 * scale, rtol=0.0)


def _reference_clip_logits(directory_model, directory_processor, images, prompts):
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(directory_model).eval()
    tokenizer = CLIPTokenizer.from_pretrained(directory_processor)
    processor = CLIPImageProcessorPil.from_pretrained(directory_processor)
    pixels = processor(images=_pil(images), return_tensors="pt")["pixel_values"]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(pixel_values=pixels, **tokens).logits_per_image.diagonal()


def test_pickscore_is_the_preference_logit_of_the_reference_pipeline(rewards, hub_dirs):
    """Kirstain et al. 2023: score = exp(logit_scale) * cos = CLIP's logits_per_image (PIL processor path)."""
    images = _images(size=64)
    reference = _reference_clip_logits(hub_dirs["pick_model"], hub_dirs["clip"], images, PROMPTS)
    got = rewards["pickscore"](images, prompts=PROMPTS)
    assert rewards["pickscore"].clip.model.logit_scale.exp().item() == pytest.approx(np.exp(2.6592), rel=1e-4)
    torch.testing.assert_close(got, reference, atol=0.05, rtol=0.0)  # ~1/255 of pixels through a random ViT


def test_clipscore_is_100_times_clamped_cosine_of_the_reference_pipeline(rewards, hub_dirs):
    images = _images(size=64, seed=1)
    logits = _reference_clip_logits(hub_dirs["clip"], hub_dirs["clip"], images, PROMPTS)
    scale = rewards["clipscore"].clip.model.logit_scale.exp().item()
    reference = (100.0 * logits / scale).clamp(min=0)
    torch.testing.assert_close(rewards["clipscore"](images, prompts=PROMPTS), reference, atol=0.05, rtol=0.0)


def test_hpsv2_is_the_cosine_of_the_reference_open_clip_pipeline(rewards, hub_dirs):
    import open_clip
    from open_clip.transform import image_transform

    from diffalign.rewards.pixel_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    model = open_clip.create_model(TINY_OPEN_CLIP)
    model.load_state_dict(torch.load(hub_dirs["hps"], weights_only=True)["state_dict"])
    transform = image_transform(32, is_train=False, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, resize_mode="longest")
    images = _images(size=64, seed=2)
    pixels = torch.stack([transform(p) for p in _pil(images)])
    with torch.no_grad():
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer(TINY_OPEN_CLIP)(PROMPTS)), dim=-1)
    torch.testing.assert_close(rewards["hpsv2"](images, prompts=PROMPTS), (image * text).sum(-1), atol=5e-4, rtol=0.0)


def test_imagereward_is_the_standardised_mlp_of_the_reference_pipeline(rewards, hub_dirs):
    """Xu et al. 2023: (MLP(BERT(prompt | ViT(image))[CLS]) - mean) / std, with ImageReward's torchvision transform."""
    from torchvision import transforms
    from transformers import BertTokenizer

    from diffalign.rewards.imagereward import REWARD_MEAN, REWARD_STD
    from diffalign.rewards.pixel_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    transform = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32), transforms.ToTensor(),
                                    transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])
    images = torch.rand(4, 3, 45, 64, generator=torch.Generator().manual_seed(3))  # odd crop margin: torchvision rounds
    images = (images * 255).round() / 255
    pixels = torch.stack([transform(p) for p in _pil(images)])
    tokens = BertTokenizer.from_pretrained(hub_dirs["imagereward"])(PROMPTS, padding="max_length", truncation=True,
                                                                   max_length=35, return_tensors="pt")
    model = rewards["imagereward"].model
    with torch.no_grad():
        image = model.vision(pixel_values=pixels).last_hidden_state
        text = model.text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                          encoder_hidden_states=image,
                          encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long)).last_hidden_state
        reference = (model.head(text[:, 0]).squeeze(-1) - REWARD_MEAN) / REWARD_STD
    got = rewards["imagereward"](images, prompts=PROMPTS)
    assert reference.std() > 0.05  # the tiny head is not flat, so the comparison means something
    torch.testing.assert_close(got, reference, atol=0.02, rtol=0.0)


def test_imagereward_checkpoint_keys_all_land(hub_dirs, tmp_path):
    """Every tensor of the original-layout checkpoint lands in the model, except the unused projections."""
    from diffalign.rewards.imagereward import convert_imagereward_state_dict

    state = torch.load(hub_dirs["imagereward"] / "ImageReward.pt", weights_only=True)
    converted = convert_imagereward_state_dict(state)
    model = get("imagereward", path=str(hub_dirs["imagereward"])).model
    assert set(converted) == set(model.state_dict())
    for key, value in converted.items():
        assert torch.equal(model.state_dict()[key], value), key
    import shutil

    broken = shutil.copytree(hub_dirs["imagereward"], tmp_path / "broken")
    state["blip.visual_encoder.blocks.0.attn.unknown"] = torch.zeros(1)
    torch.save(state, broken / "ImageReward.pt")
    with pytest.raises(DiffalignError, match=r"ImageReward.pt does not fit the model: 1 unexpected \(vision.encoder.layers.0.attn.unknown\)"):
        get("imagereward", path=str(broken))


def test_hpsv2_path_may_be_the_checkpoint_file(hub_dirs, rewards):
    reward = get("hpsv2", path=str(hub_dirs["hps"]), model_name=TINY_OPEN_CLIP)
    images = _images(2)
    torch.testing.assert_close(reward(images, PROMPTS[:2]), rewards["hpsv2"](images, PROMPTS[:2]))


@pytest.mark.parametrize("name, hub_id", [("pickscore", "yuvalkirstain/PickScore_v1"),
                                          ("clipscore", "openai/clip-vit-large-patch14"),
                                          ("hpsv2", "xswu/HPSv2"),
                                          ("imagereward", "THUDM/ImageReward")])
def test_offline_uncached_hub_id_says_download_or_path(hub_offline, name, hub_id):
    with pytest.raises(DiffalignError) as info:
        get(name)
    message = str(info.value)
    assert "\n" not in message and hub_id in message and "download it first" in message and "path=" in message


def test_bad_paths_and_options_are_one_line(tmp_path, hub_dirs):
    with pytest.raises(DiffalignError, match="is not a directory"):
        get("pickscore", path=str(tmp_path / "missing"))
    with pytest.raises(DiffalignError, match="has no HPS_v2.1_compressed.pt"):
        get("hpsv2", path=str(tmp_path), model_name=TINY_OPEN_CLIP)
    with pytest.raises(DiffalignError, match="unknown dtype 'f16'; valid choices: float32"):
        get("clipscore", path=str(hub_dirs["clip"]), dtype="f16")
    with pytest.raises(DiffalignError, match="cannot load the model from"):
        get("clipscore", path=str(tmp_path))
    with pytest.raises(DiffalignError, match="has no ImageReward.pt or med_config.json"):
        get("imagereward", path=str(tmp_path))


def _cache_repo(cache, repo_id, source):
    """Lay out ``source``'s files as a Hugging Face hub cache snapshot of ``repo_id`` (what a download leaves)."""
    import shutil

    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file():
            shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_default_hub_ids_load_from_the_cache_offline(hub_offline, hub_dirs):
    """No path=: the hub ids resolve through the (offline) Hugging Face cache, as after a download."""
    from huggingface_hub import constants

    cache = hub_offline / "hf-cache"
    assert constants.HF_HUB_CACHE == str(cache)
    _cache_repo(cache, "yuvalkirstain/PickScore_v1", hub_dirs["pick_model"])
    _cache_repo(cache, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", hub_dirs["clip"])
    _cache_repo(cache, "openai/clip-vit-large-patch14", hub_dirs["clip"])
    _cache_repo(cache, "xswu/HPSv2", hub_dirs["hps"].parent)
    _cache_repo(cache, "THUDM/ImageReward", hub_dirs["imagereward"])
    _cache_repo(cache, "google-bert/bert-base-uncased", hub_dirs["imagereward"])
    # the real repo carries the model's config.json, which AutoTokenizer reads for a hub id
    bert = next((cache / "models--google-bert--bert-base-uncased" / "snapshots").iterdir())
    (bert / "config.json").write_text('{"model_type": "bert"}')
    images = _images(2)
    for name, options in [("pickscore", {}), ("clipscore", {}), ("hpsv2", {"model_name": TINY_OPEN_CLIP}),
                          ("imagereward", {})]:
        reward = get(name, **options)
        assert str(cache) in reward.source or reward.source.count("/") == 1, reward.source
        scores = reward(images, prompts=PROMPTS[:2])
        assert scores.shape == (2,) and torch.isfinite(scores).all()
