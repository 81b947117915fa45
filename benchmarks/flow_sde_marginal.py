"""FlowSDE's marginal on coarse grids (issue 22, math 1): the figures quoted in the README (Reliability).

    python benchmarks/flow_sde_marginal.py [--quick]

* the exact Gaussian oracle (data N([1.5, -0.5], diag([0.5, 2]^2))): the worst relative error of the
  chain's std against the true marginal std over every stochastic step, at 10, 40 and 400 steps;
* ``digits-flow``: the std of x at t = 0.9 after the first step of a 10-step grid, flow SDE
  (noise level 0.7) against Euler (whose first step keeps the marginal here).

About 10 s on 2 CPU threads (``--quick``: 10 and 40 steps, fewer samples, a few seconds). Writes
``benchmarks/results/flow_sde_marginal[-quick].md`` and a ``RESULT`` line; the 10-step target is a worst
relative std error within discretisation error (<= 0.15 here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da
from diffalign.oracles import gaussian_denoiser

MEAN = torch.tensor([1.5, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 2.0], dtype=torch.float64)


def oracle_worst_std_error(steps: int, n: int = 40000, seed: int = 0) -> float:
    schedule = da.FlowSchedule()
    model = gaussian_denoiser(MEAN, STD, schedule)
    grid = schedule.time_grid(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    worst = 0.0
    for i in range(steps - 1):  # the last step is GRPO's deterministic mean
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
        x = da.FlowSDE(0.7).step(model.predict(x, grid[i]), grid[i + 1], noise)
        t = float(grid[i + 1])
        true_std = ((1 - t) ** 2 * STD**2 + t**2).sqrt()
        worst = max(worst, (x.std(0) / true_std - 1).abs().max().item())
    return worst


@torch.no_grad()
def digits_flow_first_step(n: int = 2000, seed: int = 0) -> tuple[float, float]:
    model = da.load_model("digits-flow")
    grid = model.schedule.time_grid(10)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.shape, generator=g)
    pred = model.predict(x, grid[0])
    sde = da.FlowSDE(0.7).step(pred, grid[1], torch.randn(x.shape, generator=g))
    return sde.std().item(), da.Euler().step(pred, grid[1], None).std().item()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    common.setup(args)
    n = 10000 if args.quick else 40000
    errors = {steps: oracle_worst_std_error(steps, n=n) for steps in ((10, 40) if args.quick else (10, 40, 400))}
    rows = [[f"oracle, {steps} steps", f"worst relative std error {err:.3f}"] for steps, err in errors.items()]
    sde, euler = digits_flow_first_step(n=500 if args.quick else 2000)
    rows.append(["digits-flow, 10 steps, x at t = 0.9", f"std {sde:.3f} (flow-sde) vs {euler:.3f} (euler)"])
    for row in rows:
        print(": ".join(row))
    path = common.write_markdown(
        "flow_sde_marginal", "FlowSDE's marginal on coarse grids", rows, ["case", "figure"],
        f"Flow SDE (noise level 0.7) with the first step's noise at the next grid time (Flow-GRPO). {n} oracle "
        "samples. Command: `python benchmarks/flow_sde_marginal.py" + (" --quick`" if args.quick else "`"), args.quick)
    print(f"wrote {path}")
    common.result_line("flow_sde_marginal", worst_std_error_10=f"{errors[10]:.3f}", target="0.15",
                       met=str(errors[10] <= 0.15).lower(), digits_flow_std=f"{sde:.3f}", euler_std=f"{euler:.3f}")


if __name__ == "__main__":
    main()
