"""A real CLIP tokenizer for the shapes world: byte-pair merges learnt on the caption vocabulary.

``CLIPTokenizer`` reads ``vocab.json`` (token -> id) and ``merges.txt`` (BPE merges in rank order).
We learn the merges the way BPE is learnt (Sennrich et al. 2016): start from characters (the last
one marked ``</w>``), merge the most frequent adjacent pair over the grammar's words, and repeat until
every word is one token. Applying merges in the order they were learnt reproduces that segmentation,
so each caption word is exactly one token, and any other lower-case word still tokenises (into
letters) instead of failing. The files are the standard format, so ``CLIPTokenizer.from_pretrained``
(and a diffusers pipeline's ``tokenizer/`` folder) loads them with no custom code.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from pathlib import Path

from .captions import VOCABULARY

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: the longest caption has 7 words; 16 positions leave room for start/end tokens and typos
MAX_LENGTH = 16


def learn_merges(words=VOCABULARY) -> list[tuple[str, str]]:
    """BPE merges, in rank order, that turn every word of ``words`` into a single token."""
    segmentations = {word: tuple(word[:-1]) + (word[-1] + "</w>",) for word in words}
    merges = []
    while any(len(seg) > 1 for seg in segmentations.values()):
        pairs = Counter(pair for seg in segmentations.values() for pair in zip(seg, seg[1:]))
        (left, right), _ = min(pairs.items(), key=lambda item: (-item[1], item[0]))  # most frequent, then alphabetical
        merges.append((left, right))
        for word, seg in segmentations.items():
            merged, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == (left, right):
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(seg[i])
                    i += 1
            segmentations[word] = tuple(merged)
    return merges


def write_tokenizer(directory: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs for ``CLIPTokenizer.from_pretrained``."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = learn_merges()
    tokens = [BOS, EOS, *string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase)]
    tokens += [left + right for left, right in merges if left + right not in tokens]
    vocab = {token: index for index, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                              model_max_length=MAX_LENGTH, pad_token=EOS)
    tokenizer.save_pretrained(directory)
    return directory


def load_tokenizer(directory: str | Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(directory))
