"""The reward server's wire format: images and scores as safetensors bytes, prompts in its header.

A request body is a safetensors file (https://github.com/huggingface/safetensors, "format") with one
tensor, ``images`` (B, C, H, W) in float16, bfloat16, float32 or float64, sent bit for bit in its own
dtype, so the server scores exactly the tensor the client holds and remote scores equal local ones.
The per-image ``prompts`` and ``metadata`` lists travel as JSON strings in the file's
``__metadata__`` header. A response is a safetensors file with one tensor, ``scores`` (B,).

Decoding validates before anything is allocated: the header is parsed first (its length is the
first 8 bytes), names, dtypes, shapes and the batch limit are checked, then the tensors are loaded.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Optional

import torch

from ..errors import DiffalignError

__all__ = ["WireError", "decode_images", "decode_scores", "encode_images", "encode_scores", "read_header"]

CONTENT_TYPE = "application/octet-stream"
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_HEADER_LIMIT = 1 << 24  # 16 MiB of JSON header: prompts for any sane batch, and no more


class WireError(DiffalignError):
    """A request or response that is not what the protocol says (the message names what is wrong)."""


def encode_images(images: torch.Tensor, prompts: Optional[list[str]], metadata: Optional[list[Any]]) -> bytes:
    from safetensors.torch import save

    if images.dtype not in FLOAT_DTYPES.values():
        raise WireError(f"remote rewards take float16/bfloat16/float32/float64 images; got {images.dtype}")
    header = {}
    if prompts is not None:
        header["prompts"] = json.dumps(list(prompts))
    if metadata is not None:
        try:
            header["metadata"] = json.dumps(list(metadata))
        except (TypeError, ValueError) as err:
            raise WireError(f"remote rewards send metadata as JSON, and this metadata is not JSON: {err}") from None
    return save({"images": images.detach().to("cpu").contiguous()}, metadata=header or None)


def read_header(body: bytes) -> dict:
    """The JSON header of a safetensors body, checked for size and shape before any tensor is read."""
    if len(body) < 8:
        raise WireError(f"body of {len(body)} bytes is not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", body[:8])
    if length > min(_HEADER_LIMIT, len(body) - 8):
        raise WireError(f"body is not a safetensors file (header length {length} for a body of {len(body)} bytes)")
    try:
        header = json.loads(body[8:8 + length])
    except (UnicodeDecodeError, ValueError):
        raise WireError("body is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WireError("body is not a safetensors file (its header is not a JSON object)")
    return header


def _load(body: bytes, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(body)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise WireError(f"cannot read the {name} tensor: {str(err).splitlines()[0] if str(err) else err}") from None


def _entry(header: dict, name: str, ndim: int) -> tuple[str, list[int]]:
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if set(tensors) != {name}:
        raise WireError(f"expected exactly one tensor named {name!r}; got {sorted(tensors) or 'none'}")
    entry = tensors[name]
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if dtype not in FLOAT_DTYPES:
        raise WireError(f"{name} must be float16, bfloat16, float32 or float64; got dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) != ndim or not all(isinstance(s, int) and s > 0 for s in shape):
        raise WireError(f"{name} must have {ndim} positive dimensions; got shape {shape}")
    return dtype, shape


def decode_images(body: bytes, max_batch: int) -> tuple[torch.Tensor, Optional[list[str]], Optional[list[Any]]]:
    """(images, prompts, metadata) of a request body, validated against the protocol and ``max_batch``."""
    header = read_header(body)
    _, shape = _entry(header, "images", 4)
    if shape[0] > max_batch:
        raise WireError(f"batch of {shape[0]} images is over this server's limit of {max_batch} (--max-batch); "
                        "send smaller batches (batch_size=...)")
    extra = header.get("__metadata__") or {}
    prompts = _json_list(extra, "prompts", shape[0])
    if prompts is not None and not all(isinstance(p, str) for p in prompts):
        raise WireError("prompts must be a list of strings")
    metadata = _json_list(extra, "metadata", shape[0])
    return _load(body, "images")["images"], prompts, metadata


def _json_list(extra: dict, key: str, batch: int) -> Optional[list]:
    if key not in extra:
        return None
    try:
        values = json.loads(extra[key])
    except (TypeError, ValueError):
        raise WireError(f"{key} in the header is not JSON") from None
    if not isinstance(values, list) or len(values) != batch:
        raise WireError(f"{key} must be a JSON list with one entry per image ({batch})")
    return values


def encode_scores(scores: torch.Tensor) -> bytes:
    from safetensors.torch import save

    return save({"scores": scores.detach().to("cpu").contiguous()})


def decode_scores(body: bytes, batch: int) -> torch.Tensor:
    """The ``scores`` (batch,) of a response body; anything else is a :class:`WireError`."""
    _, shape = _entry(read_header(body), "scores", 1)
    if shape != [batch]:
        raise WireError(f"expected {batch} scores; got shape {shape}")
    return _load(body, "scores")["scores"]
