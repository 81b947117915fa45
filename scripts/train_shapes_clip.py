"""Train `shapes-clip`: a tiny transformers CLIPModel, contrastive on rendered scenes with hard-negative captions.

    python scripts/train_shapes_clip.py                        # writes diffalign/data/shapes-clip
    python scripts/train_shapes_clip.py --steps 3 --out /tmp/c  # smoke test

The shipped weights came from stages; the first two counted every true caption as a positive of an image
(the loss could then ignore left/right: position stayed at chance); the third fixed that loss, though position
stayed at chance all the same (see stage 4 below):
    python scripts/train_shapes_clip.py --steps 700 --uniform --all-true-positive --out build/shapes/clip-stage1
    python scripts/train_shapes_clip.py --init build/shapes/clip-stage1 --steps 500 --lr 1e-3 --all-true-positive \
        --out build/shapes/clip-stage2
    python scripts/train_shapes_clip.py --init build/shapes/clip-stage2 --steps 500 --lr 1e-3 --out build/shapes/clip-stage3

Stage 3 still scored chance on position (0.531): its image tower could not tell left from right, so the
contrastive gradient on the relation words cancelled and the text tower merged them (cosine 0.999); a run with
position captions weighted 6x (`--position-weight 6`) stayed there too. Stage 4, shipped, breaks that symmetry with
an auxiliary objective: a training-only linear head regresses each present shape's centre from the image
embedding, weighted 10 against the contrastive loss (position 1.000, every other category >= 0.99):
    python scripts/train_shapes_clip.py --init build/shapes/clip-stage3 --steps 800 --lr 1e-3 --seed 5 \
        --position-aux-weight 10 --out build/shapes/clip-stage4   # stage 3 was then the shipped folder

Each step renders a batch of scenes for captions drawn from every category (all compositions: this is
a reward model), adds one perturbed caption per image that is false for it (NegCLIP-style hard
negatives: swapped colour, wrong count, opposite position, other shape), and minimises a
contrastive loss built from the truth (the verifier's clauses on the ground-truth scene): image -> text
picks the image's own caption against the captions that are false for it (other true captions, e.g. "a circle"
for a red circle's image, are left out of the softmax); text -> image counts every image a caption is
true of as a positive.
Prints the zero-shot accuracy on the test prompts at the end (true caption vs perturbed, per category).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffalign.atomic import atomic_directory
from diffalign.shapes.captions import CATEGORIES, SHAPES, PERTURBATIONS, all_captions, parse_caption, perturbations
from diffalign.shapes.clip import MEAN, STD, ShapesClipBackbone, clip_config, shape_centroids, zero_shot_accuracy
from diffalign.shapes.scenes import render_batch, sample_scene, to_tensor
from diffalign.shapes.tokenizer import load_tokenizer, write_tokenizer
from diffalign.shapes.verifier import caption_clauses


#: relations and counts are what a contrastive CLIP learns last (its batches rarely separate them), so
#: their captions are drawn more often; the first 700-step run with uniform categories stayed at chance on position
CATEGORY_WEIGHTS = {"position": 2.5, "counting": 1.5}


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on the positives, averaged over rows that have one."""
    rows = positive.any(dim=1)
    log_probs = logits.log_softmax(dim=1).masked_fill(~positive, float("-inf"))
    return -torch.logsumexp(log_probs[rows], dim=1).mean()


def centroid_loss(predicted: torch.Tensor, centres: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted (x, y) centre of each shape a scene has (absent shapes are ignored)."""
    error = (predicted.view_as(centres) - centres).pow(2).sum(-1)
    return error[present].mean() / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1400)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="diffalign/data/shapes-clip")
    parser.add_argument("--all-true-positive", action="store_true",
                        help="image -> text loss with every true caption a positive (the first two stages)")
    parser.add_argument("--position-weight", type=float, default=CATEGORY_WEIGHTS["position"],
                        help="how often position captions are drawn relative to a plain category")
    parser.add_argument("--lock-text-steps", type=int, default=0,
                        help="re-initialise the text tower and keep it frozen for this many steps (breaks the "
                             "symmetric saddle where both towers ignore relation words; see the README's shapes section)")
    parser.add_argument("--position-embedding-std", type=float, default=None,
                        help="re-draw the image tower's patch position embeddings with this std (transformers "
                             "initialises them small, so the ViT starts as a bag of patches, blind to arrangement)")
    parser.add_argument("--position-aux-weight", type=float, default=0.0,
                        help="add this times an auxiliary loss: a linear head (training only, not saved) regresses "
                             "each present shape's centre from the image embedding, so the image tower must encode "
                             "where things are and the contrastive gradient on relation words stops cancelling")
    parser.add_argument("--uniform", action="store_true", help="draw categories uniformly (the first stage)")
    parser.add_argument("--init", default=None, metavar="CLIP_DIR",
                        help="continue from a saved shapes-clip (a second stage) instead of a random initialisation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    with atomic_directory(Path(args.out)) as tmp:
        tokenizer = load_tokenizer(write_tokenizer(tmp))
        from transformers import CLIPImageProcessor, CLIPModel

        if args.init:
            model = CLIPModel.from_pretrained(args.init)
        else:
            model = CLIPModel(clip_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                                          tokenizer.pad_token_id, tokenizer.model_max_length))
        print(f"shapes-clip parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)
        if args.lock_text_steps:
            fresh = CLIPModel(model.config)
            model.text_model.load_state_dict(fresh.text_model.state_dict())
            model.text_projection.load_state_dict(fresh.text_projection.state_dict())
            model.text_model.requires_grad_(False)
            model.text_projection.requires_grad_(False)
        if args.position_embedding_std:
            with torch.no_grad():
                table = model.vision_model.embeddings.position_embedding.weight
                table.copy_(torch.randn(table.shape, generator=torch.Generator().manual_seed(args.seed))
                            * args.position_embedding_std)
        backbone = ShapesClipBackbone(model, tokenizer, frozen=False).train()
        # reads the normalised image embedding (what the contrastive loss compares with the relation words), so
        # the position has to survive the projection into the joint space, not only the ViT's pooled output
        # built only when used: its initialisation draws from torch's global generator, and the earlier stages'
        # commands must keep drawing the same numbers
        centroid_head = torch.nn.Linear(model.config.projection_dim, 2 * len(SHAPES)) if args.position_aux_weight else None
        parameters = list(model.parameters()) + (list(centroid_head.parameters()) if centroid_head else [])
        optimiser = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=max(args.steps, 100),
                                                       pct_start=0.05)
        pools = [all_captions(c) for c in CATEGORIES]
        category_weights = {**CATEGORY_WEIGHTS, "position": args.position_weight}
        weights = np.array([1.0 if args.uniform else category_weights.get(c, 1.0) for c in CATEGORIES])
        weights = weights / weights.sum()
        parsed: dict[str, object] = {}
        for step in range(1, args.steps + 1):
            categories = rng.choice(len(pools), size=args.batch, p=weights)
            captions = [pools[i][int(rng.integers(len(pools[i])))] for i in categories]
            scenes = [sample_scene(c, rng) for c in captions]
            texts = [c.text() for c in captions]
            for caption, scene in zip(captions, scenes):  # one hard negative per image, false for it
                wrong = [w for kind in PERTURBATIONS[caption.category] for w in perturbations(caption, kind)
                         if not all(caption_clauses(w, scene.objects))]
                if wrong:
                    texts.append(wrong[int(rng.integers(len(wrong)))].text())
            texts = list(dict.fromkeys(texts))
            for t in texts:
                parsed.setdefault(t, parse_caption(t))
            truth = torch.tensor([[all(caption_clauses(parsed[t], s.objects)) for t in texts] for s in scenes])
            own = torch.zeros_like(truth)
            own[torch.arange(len(scenes)), torch.tensor([texts.index(c.text()) for c in captions])] = True
            image = backbone.encode_image(to_tensor(render_batch(scenes)))
            text = backbone.encode_text(texts)
            logits = model.logit_scale.exp().clamp(max=100) * image @ text.T
            # image -> text: its own caption against the false ones (other true captions are left out of the
            # softmax: counting them as positives let "a circle and a square" carry a position image, and
            # left/right was never learnt); text -> image: every image the caption is true of is a positive
            if args.all_true_positive:  # the first stages' loss
                image_to_text = multi_positive_nce(logits, truth)
            else:
                image_to_text = multi_positive_nce(logits.masked_fill(truth & ~own, float("-inf")), own)
            contrastive = 0.5 * (image_to_text + multi_positive_nce(logits.T, truth.T))
            loss = contrastive
            if args.position_aux_weight:
                position = centroid_loss(centroid_head(image), *shape_centroids(scenes))
                loss = loss + args.position_aux_weight * position
            if step == args.lock_text_steps + 1 and args.lock_text_steps:
                model.text_model.requires_grad_(True)
                model.text_projection.requires_grad_(True)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if step % 50 == 0 or step == args.steps:
                aux = f" position {position.item():.4f}" if args.position_aux_weight else ""
                print(f"step {step} loss {contrastive.item():.4f}{aux} scale {model.logit_scale.exp().item():.1f} "
                      f"{time.time() - start:.0f}s", flush=True)
        seconds = time.time() - start
        model.eval()
        model.save_pretrained(tmp)  # config.json + model.safetensors
        CLIPImageProcessor(do_resize=False, do_center_crop=False, image_mean=list(MEAN), image_std=list(STD)
                           ).save_pretrained(tmp)
        accuracy = zero_shot_accuracy(ShapesClipBackbone(model, tokenizer))
        table = {f"{cat}/{kind}": round(c / t, 3) for (cat, kind), (c, t) in sorted(accuracy.items())}
        summary = {"init": args.init, "category_weights": "uniform" if args.uniform else category_weights, "steps": args.steps, "batch": args.batch, "seconds": round(seconds, 1),
                   "final_loss": round(contrastive.item(), 4),
                   "position_aux_weight": args.position_aux_weight,
                   "final_position_loss": round(position.item(), 4) if args.position_aux_weight else None, "zero_shot_accuracy": table,
                   "zero_shot_pairs": {f"{cat}/{kind}": t for (cat, kind), (c, t) in sorted(accuracy.items())}}
        (tmp / "training_summary.json").write_text(json.dumps(summary, indent=1))
        print("summary", json.dumps(summary), flush=True)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
