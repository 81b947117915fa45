"""The package's layer order, and the tests that hold every module to it.

Each module belongs to one layer; a module may import from its own layer and the layers below it,
never from a layer above (imports inside functions count: they run all the same, only later). And no
two modules import each other, directly or around a longer circle. The README's "Architecture"
section describes the same order.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "diffalign"

# Lowest first. "pkg.*" is the package and everything in it; a bare name is that one module. A more
# specific entry wins over a "pkg.*" one (diffalign.shapes.verifier over diffalign.shapes.*).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # no diffalign imports but each other: errors, files, schedules, the shapes grammar, CLI input checks
    ("core", ("diffalign.errors", "diffalign.version", "diffalign.atomic", "diffalign.registry",
              "diffalign.safe_yaml", "diffalign.prompt_files", "diffalign.prompting", "diffalign.noise_space",
              "diffalign.datasets", "diffalign.schedules", "diffalign.images", "diffalign.noisy_reward_files",
              "diffalign.cli_validation", "diffalign.shapes.*")),
    # the Denoiser, its Prediction, adapters, wrappers, LoRA, RLG, noise hypernetworks; exact oracles
    ("models", ("diffalign.models.*", "diffalign.oracles")),
    # one sampling step from a Prediction
    ("kernels", ("diffalign.kernels",)),
    # rewards, and the shapes world's programmatic verifier and CLIP (rewards themselves)
    ("rewards", ("diffalign.rewards.*", "diffalign.shapes.verifier", "diffalign.shapes.clip")),
    # denoiser wrappers that need rewards
    ("guidance", ("diffalign.guidance.*",)),
    ("samplers", ("diffalign.samplers.*",)),
    # the diffusers plugin: it samples through the samplers
    ("pipelines", ("diffalign.pipelines.*",)),
    # loading by name (a pipeline directory goes through the pipelines), sampling, evaluating
    ("api", ("diffalign.zoo", "diffalign.api", "diffalign.evaluation", "diffalign.shapes.evaluation",
             "diffalign.shapes.inference")),
    ("trainers", ("diffalign.trainers.*",)),
    # the command line, the demo, and the package root (whose lazy names reach every layer)
    ("interface", ("diffalign", "diffalign.__main__", "diffalign.cli", "diffalign.cli_prompts", "diffalign.demo",
                   "diffalign.shapes.demo", "diffalign.user_rewards")),
]


def all_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = all_modules()


def layer_of(module: str) -> int:
    """The index in LAYERS of a module: its exact entry, else its innermost ``pkg.*`` entry."""
    best, best_length = None, -1
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern == module:
                return index
            package = pattern[:-2] if pattern.endswith(".*") else None
            if package and (module == package or module.startswith(package + ".")) and len(package) > best_length:
                best, best_length = index, len(package)
    if best is None:
        raise KeyError(module)
    return best


def _known(name: str) -> str:
    """The innermost known module a dotted name lies in (``diffalign.rewards.get`` -> ``diffalign.rewards``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> set[str]:
    """Every diffalign module ``module`` imports, anywhere in its file (functions included)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name) for alias in node.names if alias.name.split(".")[0] == "diffalign")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "diffalign":
                continue
            for alias in node.names:  # `from . import x` imports the module x; `from .m import f` imports m
                found.add(_known(f"{base}.{alias.name}"))
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these modules in LAYERS (tests/test_layering.py): {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in GRAPH.items() for target in sorted(targets) if layer_of(target) > layer_of(module)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: Tarjan's strongly connected components with more than one module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    assert strongly_connected(GRAPH) == []


def test_the_checks_catch_what_they_look_for():
    """The parser sees an import inside a function, and the two checks fail on a bad graph."""
    assert "diffalign.rewards" in GRAPH["diffalign.guidance.reward_guidance"]  # imported inside a function only
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("diffalign.shapes.verifier") > layer_of("diffalign.shapes.captions")
    assert layer_of("diffalign.models.lora") < layer_of("diffalign.trainers.base")


@pytest.mark.parametrize("package", ["diffalign.models", "diffalign.samplers"])
def test_importing_a_layer_loads_nothing_above_it(package):
    """``python -X importtime -c "import diffalign.samplers"`` agrees with LAYERS: no module of a higher
    layer is imported (the static check above, run for real)."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {package}"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    loaded = {name for name in loaded if name.split(".")[0] == "diffalign"}
    assert package in loaded
    above = sorted(name for name in loaded if layer_of(name) > layer_of(package) and name != "diffalign")
    assert not above, f"import {package} loaded {above}"


def test_every_from_import_in_the_package_names_something_that_exists():
    """A name imported inside a function is looked up only when the function runs: after a move
    (``load_model`` left ``diffalign.models`` for ``diffalign.zoo``) a stale lazy import fails in
    front of a user, not at import time. Resolve every ``from X import name`` statically instead."""
    import importlib

    missing = []
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("diffalign"):
                continue
            imported = importlib.import_module(target)
            for alias in node.names:
                if alias.name == "*" or hasattr(imported, alias.name):
                    continue
                try:
                    importlib.import_module(f"{target}.{alias.name}")
                except ImportError:
                    missing.append(f"{module} (line {node.lineno}): {target} has no {alias.name!r}")
    assert not missing, "imports of names that do not exist:\n" + "\n".join(missing)
