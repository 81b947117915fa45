"""Train the embedded digit classifier (the `digit` reward and the FID feature extractor).

    python scripts/train_classifier.py                  # writes diffalign/data/digit-classifier
    python scripts/train_classifier.py --epochs 1 --out /tmp/c   # smoke test

Light augmentation (1-pixel shifts, a little Gaussian noise) makes it robust to the small artefacts of
generated samples, which it has to judge.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from tqdm import tqdm

from diffalign.atomic import atomic_directory
from diffalign.datasets import load_digits_split
from diffalign.models.classifier import DigitClassifier


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shifts = torch.randint(-1, 2, (2,), generator=generator).tolist()
    images = torch.roll(images, shifts=shifts, dims=(2, 3))
    return (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="diffalign/data/digit-classifier")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train, test = load_digits_split("train"), load_digits_split("test")
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(train.labels) + args.batch_size - 1) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    for _ in tqdm(range(args.epochs), desc="epochs", mininterval=5):
        order = torch.randperm(len(train.labels), generator=generator)
        for batch in order.split(args.batch_size):
            loss = F.cross_entropy(model(augment(train.images[batch], generator)), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    print(f"held-out accuracy {accuracy:.4f}")
    with atomic_directory(args.out) as tmp:
        model.save_pretrained(tmp)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
