"""Evaluation while training: the held-out prompts, fixed seeds, a panel of rewards, ``eval.jsonl``.

Every ``data.eval_every`` steps and at the end, the main process samples each test prompt
(``data.eval_samples_per_prompt`` samples, test prompt i seeded ``data.eval_seed + i``, so every
evaluation sees the same noise and differences are the weights') and scores them with every reward
of the panel (``data.eval_rewards``; default the training reward). Watching a reward other than the
one trained on is how reward hacking shows before it is too late.

Each evaluation is logged through accelerate's trackers (``eval/<reward>`` means and an image grid,
one row per test prompt) and written as one line of ``eval.jsonl`` in the run directory:
``{"step": s, "time": unix time, "rewards": {name: {"mean": m, "per_prompt": [...]}}}``. The file is rewritten
atomically with the line of step s replacing any earlier line of step s, so a resumed run keeps the
history and never holds two lines for one step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import DiffalignError
from ..prompt_files import read_prompt_file

EVAL_FILE = "eval.jsonl"


def panel_rewards(entries: list, training_reward) -> dict[str, Any]:
    """{display name: reward} from ``data.eval_rewards`` (names or {name, options}); empty: the training reward."""
    from .. import rewards

    if not entries:
        return {getattr(training_reward, "name", "reward"): training_reward}
    panel = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str) and set(entry) <= {"name", "options", "label"}:
            name, options = entry["name"], entry.get("options") or {}
        else:
            raise DiffalignError(f"config key 'data.eval_rewards[{i}]' must be a reward name or "
                                 f"{{name: ..., options: {{...}}, label: ...}}; got {entry!r}")
        label = entry.get("label", name) if isinstance(entry, dict) else name
        if label in panel:
            raise DiffalignError(f"config key 'data.eval_rewards' names {label!r} twice; give each a distinct 'label'")
        panel[label] = rewards.get(name, **options)
    return panel


class PromptEvaluator:
    """Samples the test prompts with fixed seeds and scores them with the panel (main process only)."""

    def __init__(self, trainer):
        data = trainer.config.data
        self.trainer = trainer
        self.test = read_prompt_file(data.test_prompts, "data.test_prompts")
        self.panel = panel_rewards(data.eval_rewards, trainer.reward)
        for reward in self.panel.values():
            if isinstance(reward, torch.nn.Module):
                reward.to(trainer.accelerator.device)
        self.path = Path(trainer.output_dir) / EVAL_FILE

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        from ..api import sample
        from ..atomic import atomic_write_bytes

        trainer, data = self.trainer, self.trainer.config.data
        model = trainer.policy(trainer.model)
        k = data.eval_samples_per_prompt
        out = sample(model, None, sampler="ancestral", prompts=list(self.test.prompts),
                        metadata=None if self.test.metadata is None else list(self.test.metadata),
                        num_samples=k, steps=data.eval_steps, seed=data.eval_seed, progress=False)
        images = model.decode(out.samples).float()
        line: dict[str, Any] = {"step": step, "time": round(time.time(), 3), "prompts": len(self.test),
                                "samples_per_prompt": k, "rewards": {}}
        scalars = {}
        for name, reward in self.panel.items():
            scores = torch.cat([reward(chunk, prompts=out.prompts[i:i + len(chunk)],
                                       metadata=None if out.metadata is None else out.metadata[i:i + len(chunk)])
                                .reshape(-1).float().cpu()
                                for i, chunk in zip(range(0, len(images), 256), images.split(256))])
            per_prompt = scores.view(len(self.test), k).mean(1)
            line["rewards"][name] = {"mean": float(scores.mean()), "per_prompt": [round(float(v), 6) for v in per_prompt]}
            scalars[f"eval/{name}"] = float(scores.mean())
        history = [entry for entry in self.history() if entry["step"] != step]
        history.append(line)
        history.sort(key=lambda entry: entry["step"])
        atomic_write_bytes(self.path, "".join(json.dumps(entry) + "\n" for entry in history).encode())
        shown = min(len(self.test), data.eval_grid_prompts)
        self._log(scalars, images[: shown * k], k, list(self.test.prompts[:shown]), step)
        return scalars

    def history(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(text) for text in self.path.read_text().splitlines() if text.strip()]

    def _log(self, scalars: dict, images: torch.Tensor, per_row: int, labels: list[str], step: int) -> None:
        import numpy as np

        from ..images import grid_image

        acc, tc = self.trainer.accelerator, self.trainer.config.train
        if tc.report_to == "none":
            return
        acc.log(scalars, step=step)
        grid = np.asarray(grid_image(images, nrow=per_row, padding=2, row_labels=labels).convert("RGB"))
        tracker = acc.get_tracker(tc.report_to, unwrap=True)
        if tc.report_to == "tensorboard":
            tracker.add_image("eval/samples", grid, global_step=step, dataformats="HWC")
        elif tc.report_to == "wandb":
            import wandb

            tracker.log({"eval/samples": wandb.Image(grid)}, step=step)
