"""Every `name=value` an error or warning prints names a real option or argument the user can set."""

import ast
import inspect
from pathlib import Path

import diffalign as da
from diffalign.samplers import SAMPLERS, Sampler

SAMPLERS_DIR = Path(da.samplers.__file__).parent


def _user_settable_names() -> set[str]:
    names = set(inspect.signature(Sampler.sample).parameters) - {"self"}
    for name in SAMPLERS.names():
        names |= set(inspect.signature(SAMPLERS._factories[name]).parameters)
    for name in da.kernels.KERNELS.names():
        names |= set(inspect.signature(da.kernels.KERNELS._factories[name]).parameters)
    return names


def _names_in_messages(tree: ast.AST):
    """`key` for every f"...key={value}..." passed to an exception or to warnings.warn."""
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if not (func.endswith("Error") or func in ("warn", "too_small_budget")):
            continue
        for fstring in (n for arg in call.args for n in ast.walk(arg) if isinstance(n, ast.JoinedStr)):
            parts = fstring.values
            for text, value in zip(parts, parts[1:]):
                if isinstance(text, ast.Constant) and isinstance(value, ast.FormattedValue) and text.value.endswith("="):
                    yield text.value.rstrip("=").split()[-1].strip("(,")


def test_messages_name_real_options():
    valid = _user_settable_names()
    found = {}
    for path in sorted(SAMPLERS_DIR.glob("*.py")):
        for key in _names_in_messages(ast.parse(path.read_text())):
            found.setdefault(key, path.name)
    assert "max_memory_bytes" in found  # the scan sees the tree's memory error
    wrong = {key: file for key, file in found.items() if key not in valid}
    assert not wrong, f"messages name options that do not exist: {wrong}"
