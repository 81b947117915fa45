"""Tiny random models with the *real* architectures of the hub rewards, saved as their loaders expect.

Nothing is downloaded: the CLIP tokenizer's BPE files are written here (a byte-level vocabulary of
printable ASCII plus a few merges, the layout of the real ``vocab.json`` / ``merges.txt``), the
models are transformers / open_clip classes built from tiny configs with random weights, and
everything is written with ``save_pretrained`` / ``torch.save`` in the hub repos' layout, so the
rewards load them through the same ``from_pretrained`` code path as the hub ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffalign.rewards.pixel_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

TINY_IMAGE_SIZE = 32
TINY_OPEN_CLIP = "diffalign-test-tiny-hps"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": TINY_IMAGE_SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_clip_bpe(directory: Path) -> None:
    """vocab.json and merges.txt of a tiny CLIP BPE: each printable character, alone and word-final."""
    chars = [chr(c) for c in range(33, 127)]
    tokens = chars + [c + "</w>" for c in chars]
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>"), ("r", "e"), ("e", "d</w>")]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def save_tiny_hf_clip(directory: Path, *, image_size: int = TINY_IMAGE_SIZE, seed: int = 0,
                      with_processor: bool = True) -> Path:
    """A random transformers ``CLIPModel`` (+ tokenizer and ``CLIPImageProcessor`` config) in ``directory``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    write_clip_bpe(directory)
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    model.save_pretrained(directory)
    if with_processor:
        tokenizer.save_pretrained(directory)
        processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size}, resample=3,
                                       image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))
        processor.save_pretrained(directory)
    return directory


def save_tiny_hps_checkpoint(directory: Path, filename: str = "HPS_v2.1_compressed.pt", seed: int = 0) -> Path:
    """A random open_clip model in the HPSv2 checkpoint layout ``{"state_dict": ...}``; registers the config."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{TINY_OPEN_CLIP}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_OPEN_CLIP)
    torch.save({"state_dict": model.state_dict()}, directory / filename)
    return directory / filename


TINY_BERT_WORDS = ["the", "red", "cat", "a", "dog", "and", "sea", "an", "orange", "blue", "of"]


def write_bert_vocab(directory: Path) -> int:
    """vocab.txt of a tiny uncased BERT WordPiece vocabulary (special tokens, letters, a few words)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_BERT_WORDS + letters + ["##" + c for c in letters]
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return len(tokens)


def imagereward_original_key(key: str) -> str:
    """Our ImageRewardModel key -> the name BLIP's original modules give it in ImageReward.pt."""
    import re

    if key.startswith("text."):
        return "blip.text_encoder." + key[len("text."):]
    if key.startswith("head."):
        return "mlp.layers." + key[len("head."):]
    name = key[len("vision."):]
    fixed = {"embeddings.position_embedding": "pos_embed", "embeddings.class_embedding": "cls_token"}
    if name in fixed:
        return "blip.visual_encoder." + fixed[name]
    name = name.replace("embeddings.patch_embedding.", "patch_embed.proj.").replace("post_layernorm.", "norm.")
    name = re.sub(r"^encoder\.layers\.(\d+)\.", r"blocks.\1.", name)
    name = name.replace("self_attn.projection.", "attn.proj.").replace("self_attn.qkv.", "attn.qkv.")
    name = name.replace("layer_norm1.", "norm1.").replace("layer_norm2.", "norm2.")
    return "blip.visual_encoder." + name


def save_tiny_imagereward(directory: Path, seed: int = 0) -> Path:
    """ImageReward.pt (original BLIP key names) + med_config.json + a BERT tokenizer + vision_config.json."""
    from transformers import BertTokenizer, BlipTextConfig, BlipVisionConfig

    from diffalign.rewards.imagereward import ImageRewardModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_bert_vocab(directory)
    BertTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=TINY_IMAGE_SIZE, patch_size=8, layer_norm_eps=1e-6)
    (directory / "vision_config.json").write_text(json.dumps(vision))
    med = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
           "hidden_dropout_prob": 0.1, "hidden_size": 24, "initializer_range": 0.02, "intermediate_size": 48,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab,
           "encoder_width": 768, "add_cross_attention": True}
    (directory / "med_config.json").write_text(json.dumps(med))
    torch.manual_seed(seed)
    text = BlipTextConfig(vocab_size=vocab, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                          bos_token_id=None, sep_token_id=None, eos_token_id=None)
    model = ImageRewardModel(BlipVisionConfig(**vision), text)
    with torch.no_grad():  # at the default init (std 0.02) five stacked linears squash every score to ~0
        for layer in model.head:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, 1.0 / layer.in_features ** 0.5 * 3)
    state = {imagereward_original_key(k): v for k, v in model.state_dict().items()}
    # entries the released checkpoint carries that scoring does not use
    state["blip.vision_proj.weight"] = torch.zeros(8, 32)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    torch.save(state, directory / "ImageReward.pt")
    return directory
