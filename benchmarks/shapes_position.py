"""Does a `shapes` model follow the relation word? Position captions, correct vs reversed relation.

    python benchmarks/shapes_position.py [--quick] [--model shapes|DIR] [--lora RUN/final] [--samples 4]

For every position caption ("a circle left of a square") of the prompt files (train and test share
them: position captions name no colour, so none is a held-out composition), draws ``--samples`` images (ancestral, 20 steps, CFG 3, seed 0) and, with the verifier's own
detector, counts the images whose objects are all there (every clause but the relation holds), and
among those the ones where the relation holds, and where the *opposite* relation holds (left <-> right,
above <-> below). A model that ignores the relation word puts the pair either way about equally
often: correct ~ reversed. That separates "cannot place objects" from "does not read the relation",
which the strict score alone does not.

``--loss-gap`` asks the same of the denoiser's training loss, without sampling: on 128 renders of
position captions, the epsilon-MSE with the true caption, with the caption whose relation is reversed,
and with the empty caption, at fixed timesteps (same noise for all three). A model that reads the
relation word has a lower loss with the true caption than with the reversed one.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def relation_counts(images, prompts) -> dict[str, int]:
    """Images with all objects present; of those, relation correct; and relation reversed."""
    from diffalign.shapes.captions import parse_caption
    from diffalign.shapes.verifier import caption_clauses, detect_objects, relation_holds

    counts = {"images": len(prompts), "objects_ok": 0, "correct": 0, "reversed": 0}
    for prompt, image in zip(prompts, images):
        caption, objects = parse_caption(prompt), detect_objects(image)
        clauses = caption_clauses(caption, objects)
        if not all(clauses[:-1]):
            continue
        counts["objects_ok"] += 1
        counts["correct"] += clauses[-1]
        first = [o for o in objects if o.shape == caption.groups[0].shape]
        second = [o for o in objects if o.shape == caption.groups[1].shape]
        counts["reversed"] += any(relation_holds(OPPOSITE[caption.relation], a, b) for a in first for b in second)
    return counts


LOSS_GAP_TIMESTEPS = (900, 800, 700, 600, 500, 300, 100)


def relation_loss_gap(directory: str, scenes: int = 128, seed: int = 0) -> list[list]:
    """Rows (t, abar, loss true, loss reversed, loss empty, reversed - true) of a shapes pipeline directory."""
    import numpy as np
    import torch

    import diffalign as da
    from diffalign.shapes.captions import all_captions
    from diffalign.shapes.scenes import render_batch, sample_scene, to_tensor

    pipe = da.load_pipeline(directory)  # the stock StableDiffusionPipeline
    rng = np.random.default_rng(seed)
    captions = all_captions("position")
    chosen = [captions[i % len(captions)] for i in range(scenes)]
    true_texts = [c.text() for c in chosen]
    reversed_texts = [c.text().replace(c.relation, OPPOSITE[c.relation]) for c in chosen]
    images = to_tensor(render_batch([sample_scene(c, rng) for c in chosen])) * 2 - 1
    rows = []
    with torch.no_grad():
        latents = pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor

        def encode(texts):
            ids = pipe.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids
            return pipe.text_encoder(ids)[0]

        hidden = [encode(true_texts), encode(reversed_texts), encode([""] * scenes)]
        generator = torch.Generator().manual_seed(seed)
        for t in LOSS_GAP_TIMESTEPS:
            abar = pipe.scheduler.alphas_cumprod[t]
            noise = torch.randn(latents.shape, generator=generator)
            noisy = abar.sqrt() * latents + (1 - abar).sqrt() * noise
            steps = torch.full((scenes,), t)
            losses = [(pipe.unet(noisy, steps, encoder_hidden_states=h).sample - noise).pow(2).mean().item()
                      for h in hidden]
            rows.append([t, f"{abar:.3f}", *(f"{v:.4f}" for v in losses), f"{losses[1] - losses[0]:+.4f}"])
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4, help="images per position caption")
    p.add_argument("--model", default="shapes", help="the shipped model, or a pipeline directory (e.g. a retrained one)")
    p.add_argument("--lora", default=None, help="a LoRA (a run's final/) to evaluate instead of the base model")
    p.add_argument("--loss-gap", action="store_true", help="the training-loss test instead of sampling (seconds)")
    args = p.parse_args()
    common.setup(args)
    if args.loss_gap:
        write_loss_gap(args)
        return
    import diffalign as da
    from diffalign.shapes.evaluation import load_prompts, sample_images

    model = da.load_model(args.model, lora=args.lora) if args.lora else da.load_model(args.model)
    label = ("shapes (base)" if args.model == "shapes" else args.model) + (f" + {args.lora}" if args.lora else "")
    # the position captions carry no colour, so no held-out composition: train and test share them
    captions = sorted({row["prompt"] for split in ("train", "test") for row in load_prompts(split)
                       if row["category"] == "position"})
    if args.quick:
        captions = captions[:8]
    prompts = [c for c in captions for _ in range(args.samples)]
    counts = relation_counts(sample_images(model, prompts, steps=20, guidance=3.0, seed=0), prompts)
    ok = max(counts["objects_ok"], 1)
    table = [[label, len(captions), counts["images"],
              f"{counts['objects_ok'] / counts['images']:.2f}", f"{counts['correct'] / ok:.2f}",
              f"{counts['reversed'] / ok:.2f}", f"{counts['correct'] / counts['images']:.2f}"]]
    header = ["model", "captions", "images", "objects all present", "relation correct (of those)",
              "relation reversed (of those)", "strict"]
    notes = (f"Model: {label}; ancestral, 20 steps, CFG 3, seed 0, "
             f"{args.samples} images per caption. Correct and reversed are counted among images whose objects "
             "are all present; their sum can exceed 1 when several pairs exist, and fall short of 1 when the "
             "pair is within the verifier's 3 px margin. Command: `python benchmarks/shapes_position.py"
             + (" --quick" if args.quick else "") + (f" --model {args.model}" if args.model != "shapes" else "") + (f" --lora {args.lora}" if args.lora else "") + "`")
    suffix = ("" if args.model == "shapes" else "-" + Path(args.model).name) + ("-lora" if args.lora else "")
    path = common.write_markdown("shapes_position" + suffix,
                                 "shapes: does the model read the relation word?", table, header, notes, args.quick)
    print(f"wrote {path}")
    common.result_line("shapes_position", correct=f"{counts['correct'] / ok:.2f}",
                       reversed=f"{counts['reversed'] / ok:.2f}", objects_ok=f"{counts['objects_ok'] / counts['images']:.2f}")

def write_loss_gap(args) -> None:
    rows = relation_loss_gap(args.model)
    header = ["t", "abar", "loss, true caption", "loss, relation reversed", "loss, empty caption", "reversed - true"]
    notes = (f"Model: {args.model}. Epsilon-MSE on 128 renders of position captions (VAE posterior means), the same "
             "noise for the three captions at each t. A model that reads the relation word has reversed - true > 0. "
             "Command: `python benchmarks/shapes_position.py --loss-gap"
             + (f" --model {args.model}" if args.model != "shapes" else "") + "`")
    suffix = "" if args.model == "shapes" else "-" + Path(args.model).name
    path = common.write_markdown("shapes_position-loss-gap" + suffix, "shapes: does the denoiser's loss read the relation word?",
                                 rows, header, notes, False)
    print(f"wrote {path}")
    gap = max(abs(float(r[-1])) for r in rows)
    conditioning = max(float(r[4]) - float(r[2]) for r in rows)
    common.result_line("shapes_position_loss_gap", largest_relation_gap=f"{gap:.4f}",
                       largest_caption_gain=f"{conditioning:.4f}")


if __name__ == "__main__":
    main()
