"""Shared plumbing for benchmark scripts: results files and the final RESULT line."""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small settings that finish in under 2 minutes")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, the CI machine)")
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_markdown(name: str, title: str, table: list[list], header: list[str], notes: str, quick: bool) -> Path:
    """Write benchmarks/results/<name>[-quick].md with a table and how it was produced."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'-quick' if quick else ''}.md"
    lines = [f"# {title}", "", notes.strip(), "",
             f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_json(name: str, data: dict, quick: bool) -> Path:
    """Write benchmarks/results/<name>[-quick].json: the same figures as the markdown, machine-readable."""
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps({**data, "machine": machine(), "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    return path


def result_line(name: str, **values) -> str:
    parts = " ".join(f"{k}={v}" for k, v in values.items())
    line = f"RESULT name={name} {parts}"
    print(line)
    return line
