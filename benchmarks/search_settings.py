"""DTS* settings on the held-out tuning digit: rollouts in flight, and the dead-end fast-forward.

    python benchmarks/search_settings.py [--quick]

Same task as ``search.py`` (reward -100 * MSE to one held-out digit, unconditional ``digits``, 50 steps),
but on the *tuning* reference (the first test-set 7), never on the benchmark's 3. Two questions:

* rows in flight (``leaves_per_iteration``): more rows make each model call cheaper per row on a small
  model but let more selections run before earlier rewards return. Is the wall time to a given reward
  better with 32 or 64 rows than with the default 16?
* the dead-end fast-forward (``DTSStarSampler.repeat_dead_end``): the same search with it switched off
  (one selection at a time), interleaved with the default, gives the same rewards (a test checks the
  tree is identical) and shows the wall time it saves.

Full run: about 30 minutes on 2 cores; ``--quick`` (one seed, small budgets): about 2 minutes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from search import STEPS, match_reward  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.datasets import load_digits_split  # noqa: E402


def run(model, reward, rows: int, fast_forward: bool, nfe: int, seed: int) -> tuple[float, float]:
    """(best reward, seconds) of one DTS* search."""
    sampler = da.samplers.get("dts-star", leaves_per_iteration=rows, fast_forward=fast_forward, progress=False)
    start = time.perf_counter()
    out = sampler.sample(model, reward, num_samples=1, nfe=nfe, steps=STEPS, seed=seed)
    return out.rewards[0].item(), time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    common.setup(args)
    model = da.load_model("digits")
    test = load_digits_split("test")
    reward = match_reward(test.images[(test.labels == 7).nonzero()[0, 0]])
    # (label, rows, fast-forward, [(nfe, seeds)]); the fast-forward pair is interleaved seed by seed
    if args.quick:
        rows_plan = [(16, [(3_000, 1), (10_000, 1)]), (64, [(3_000, 1), (10_000, 1)])]
        pair_nfe, pair_seeds = 10_000, 1
    else:
        rows_plan = [(16, [(10_000, 3), (30_000, 3), (100_000, 2)]), (32, [(10_000, 3), (30_000, 3)]),
                     (64, [(10_000, 3), (30_000, 3), (100_000, 2)])]
        pair_nfe, pair_seeds = 30_000, 2

    table = []

    def add(label, nfe, results):
        rewards, seconds = [r for r, _ in results], [s for _, s in results]
        mean, secs = sum(rewards) / len(rewards), sum(seconds) / len(seconds)
        table.append([label, f"{nfe:,}", f"{mean:.3f}", " ".join(f"{r:.2f}" for r in rewards), f"{secs:.1f}"])
        print(f"{label:32s} nfe={nfe:>7,d}: {mean:.3f} ({secs:.1f} s/run)", flush=True)

    for rows, budgets in rows_plan:
        for nfe, seeds in budgets:
            add(f"{rows} rows", nfe, [run(model, reward, rows, True, nfe, seed) for seed in range(seeds)])
    pairs = {True: [], False: []}
    for seed in range(pair_seeds):
        for fast in (True, False):
            pairs[fast].append(run(model, reward, 16, fast, pair_nfe, seed))
    add("16 rows, fast-forward on", pair_nfe, pairs[True])
    add("16 rows, fast-forward off", pair_nfe, pairs[False])
    same = [r for r, _ in pairs[True]] == [r for r, _ in pairs[False]]
    saved = sum(s for _, s in pairs[False]) / sum(s for _, s in pairs[True])

    notes = (f"`python benchmarks/search_settings.py{' --quick' if args.quick else ''}`: DTS* at its defaults except the "
             "row count, on the tuning reference digit (class 7), reward -100 * MSE, 50 steps. Rewards per seed, "
             "mean, and seconds per run, alone on the machine. The fast-forward pair runs interleaved seed by seed; "
             f"its rewards are {'identical' if same else 'NOT identical'} and the fast-forward is {saved:.2f}x faster.")
    path = common.write_markdown("search_settings", "DTS* settings: rows in flight and the dead-end fast-forward",
                                 table, ["setting", "NFE", "mean best reward", "per seed", "s / run"], notes, args.quick)
    print(f"wrote {path}")
    common.result_line("search_settings", fast_forward_identical=str(same).lower(), fast_forward_speedup=f"{saved:.2f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
