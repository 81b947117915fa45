"""YAML for configs and command-line values: safe types, no aliases, bounded size.

``yaml.safe_load`` already refuses arbitrary objects, but it expands aliases: a 635-byte document of
nested ``&a [*b, *b, ...]`` anchors grows into billions of nodes (the "billion laughs"), and a config
has no use for them. This loader refuses any alias, and :func:`load` refuses a document over
:data:`MAX_BYTES` or nested deeper than :data:`MAX_DEPTH`. Torch-free (the CLI checks configs before
importing torch).
"""

from __future__ import annotations

import yaml

from .errors import DiffalignError

MAX_BYTES = 1 << 20  # a config is a few kB; 1 MiB leaves room for long prompt lists
MAX_DEPTH = 32


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} (YAML aliases are not allowed here)",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _depth(node, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level)
    return level


def load(text: str, what: str):
    """Parse ``text`` (safe types, no aliases); errors are one line naming ``what``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise DiffalignError(f"{what} is larger than {MAX_BYTES // 1024} kB; a config has no need for that much")
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(err, "problem", None)
        reason = f": {problem}" if problem and "alias" in str(problem) else ""
        raise DiffalignError(f"{what} is not valid YAML{where}{reason}") from None
    except RecursionError:
        raise DiffalignError(f"{what} is nested too deeply") from None
    if _depth(data) > MAX_DEPTH:
        raise DiffalignError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    return data
