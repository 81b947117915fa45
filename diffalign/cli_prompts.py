"""``diffalign sample --prompts FILE``: one prompt-set call, one grid and one JSON line per prompt.

The prompts run as one prompt-set call of the sampler (design.md §3b): their rows share model calls,
each image's reward sees its own prompt (and the jsonl file's other fields as metadata), and
``--nfe`` is the budget per prompt. Under ``accelerate launch -m diffalign sample --prompts FILE ...``
each process takes a contiguous share of the prompts (accelerate's ``PartialState.split_between_processes``)
and runs it as one call. Prompt i is sampled with seed ``--seed + i`` whatever the number of processes
(the prompt-set seeding rule), so the results do not depend on how the prompts were split. Each
process writes its JSON lines to a part file; the main process merges them, in prompt order, into
``OUT.jsonl``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .atomic import atomic_write_bytes
from .errors import SamplingWarning, report_warnings


def sample_prompts(args, state, sampler, model, reward, out_path: Path) -> None:
    from .images import save_grid

    jobs = list(enumerate(args.prompt_list))
    lines = []
    with state.split_between_processes(jobs) as mine:
        if mine:
            first = mine[0][0]  # shares are contiguous: prompt first + k is seeded --seed + first + k
            metadata = None if args.prompt_metadata is None else [args.prompt_metadata[i] for i, _ in mine]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SamplingWarning)
                out = sampler.sample(model, reward, num_samples=args.num_samples, nfe=args.nfe, steps=args.steps,
                                     seed=args.seed + first, prompts=[prompt for _, prompt in mine], metadata=metadata)
            report_warnings(caught)
            images = model.decode(out.samples)
            k = args.num_samples
            for j, (index, prompt) in enumerate(mine):
                image = out_path.with_name(f"{out_path.stem}-{index:03d}{out_path.suffix}")
                save_grid(images[j * k:(j + 1) * k], image)
                rewards = None if out.rewards is None else [round(float(r), 6) for r in out.rewards[j * k:(j + 1) * k]]
                lines.append({
                    "index": index, "prompt": prompt, "image": str(image), "rewards": rewards,
                    "mean_reward": None if rewards is None else sum(rewards) / len(rewards),
                    "nfe": out.info["nfe_per_prompt"][j],
                    "seconds": round(out.info["seconds"] / len(mine), 3), "process": state.process_index,
                })
    results = out_path.with_suffix(".jsonl")
    part = results.with_name(f"{results.name}.part{state.process_index}")
    # atomic: a pre-planted symlink at the target is replaced, never written through (issue 22)
    atomic_write_bytes(part, "".join(json.dumps(line) + "\n" for line in lines).encode())
    state.wait_for_everyone()
    if not state.is_main_process:
        return
    merged = []
    for rank in range(state.num_processes):
        piece = results.with_name(f"{results.name}.part{rank}")
        merged += [json.loads(text) for text in piece.read_text().splitlines() if text.strip()]
        piece.unlink()
    merged.sort(key=lambda line: line["index"])
    atomic_write_bytes(results, "".join(json.dumps(line) + "\n" for line in merged).encode())
    print(f"wrote {len(merged)} grids {out_path.stem}-NNN{out_path.suffix} and {results} "
          f"({sum(line['nfe'] for line in merged)} NFE, {state.num_processes} process(es); --nfe is per prompt)")
