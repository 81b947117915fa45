"""The shapes world: a text-to-image world of coloured shapes, small enough to train and align on a CPU.

- :mod:`.captions`: the caption grammar (GenEval's six categories) and the train/test split of compositions;
- :mod:`.scenes`: seeded numpy rendering of 32x32 scenes that make a caption true;
- :mod:`.verifier`: ``shapes-verifier``, a GenEval-style programmatic reward;
- :mod:`.clip`: ``shapes-clip``, a tiny CLIP trained on the world (a prompt-aware, differentiable CLIPScore);
- :mod:`.tokenizer`: the world's ``CLIPTokenizer`` (BPE merges learnt on the grammar's words);
- :mod:`.evaluation`: per-category verifier accuracy and a Frechet distance in shapes-clip space.

The generator itself is a stock diffusers pipeline directory, ``diffalign/data/shapes``
(``da.load_pipeline("shapes")``, ``da.load_model("shapes")``), trained by ``scripts/train_shapes_*.py``.
"""

from .captions import CATEGORIES, COLOURS, RELATIONS, SHAPES, Caption, ObjectGroup, parse_caption, write_prompt_files
from .scenes import Scene, SceneObject, render, render_batch, sample_scene, sample_scenes

__all__ = ["CATEGORIES", "COLOURS", "RELATIONS", "SHAPES", "Caption", "ObjectGroup", "Scene", "SceneObject",
           "parse_caption", "render", "render_batch", "sample_scene", "sample_scenes", "write_prompt_files"]
