"""``bandit layers``' text: each service answer rendered for people (``--json`` prints the
answer itself). Ranges are written as the commands take them, ``START:END`` (buckets START to
END - 1)."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from bandit.assignment import BUCKETS
from bandit.ops import operator_render
from bandit.ops.operator_render import _table, patch_lines

#: Characters of the bucket bar, and the buckets each stands for.
BAR_WIDTH = 100
BUCKETS_PER_CELL = BUCKETS // BAR_WIDTH
#: An experiment's letter on the bar (by id order); past 26, '#'.
LETTERS = string.ascii_uppercase
FREE = "."


def ranges_text(ranges: Sequence[Sequence[int]] | None) -> str:
    if not ranges:
        return "none"
    return ", ".join(f"{start}:{end}" for start, end in ranges)


def _buckets(ranges: Sequence[Sequence[int]]) -> int:
    return sum(end - start for start, end in ranges)


def _letter(position: int) -> str:
    return LETTERS[position] if position < len(LETTERS) else "#"


def render_list(document: Any) -> str:
    layers = document["layers"]
    if not layers:
        return "no layers"
    rows = []
    for layer in layers:
        used = sum(layer["shares"].values())
        rows.append([layer["id"], layer["version"], len(layer["ranges"]), f"{used:.1%}",
                     f"{1 - used:.1%}", layer["default"] or "-", layer["salt"]])
    return _table(["layer", "version", "experiments", "in use", "free", "default", "salt"],
                  rows, numeric={1, 2, 3, 4})


def bar(layer: Any) -> str:
    """The buckets as ``BAR_WIDTH`` characters: each cell shows the experiment owning most of
    its buckets, in upper case if it owns all of them, lower case if part; ``.`` is free."""
    owners = bytearray(BUCKETS)  # 0: free, else the experiment's position + 1
    for position, experiment in enumerate(layer["ranges"]):
        for start, end in layer["ranges"][experiment]:
            owners[start:end] = bytes([position + 1]) * (end - start)
    cells = []
    for cell in range(BAR_WIDTH):
        chunk = owners[cell * BUCKETS_PER_CELL:(cell + 1) * BUCKETS_PER_CELL]
        counts = {owner: chunk.count(owner) for owner in set(chunk) if owner}
        if not counts:
            cells.append(FREE)
            continue
        owner = max(counts, key=lambda o: (counts[o], -o))
        letter = _letter(owner - 1)
        cells.append(letter if counts[owner] == len(chunk) else letter.lower())
    return "".join(cells)


def render_layer(layer: Any) -> str:
    fields = [("layer", layer["id"]), ("salt", layer["salt"]),
              ("default", layer["default"] or "none"), ("version", str(layer["version"]))]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name:<{width}}  {text}" for name, text in fields]
    rows: list[list[Any]] = [
        [experiment, _letter(position), ranges_text(spans), f"{_buckets(spans):,}",
         f"{layer['shares'][experiment]:.2%}"]
        for position, (experiment, spans) in enumerate(layer["ranges"].items())]
    free = _buckets(layer["free"])
    rows.append([f"free (default: {layer['default'] or 'none'})", FREE,
                 ranges_text(layer["free"]), f"{free:,}", f"{free / BUCKETS:.2%}"])
    lines += ["", _table(["experiment", "bar", "ranges", "buckets", "share"], rows,
                         numeric={3, 4})]
    middle = f"{BUCKETS // 2}"
    scale = "0".ljust(BAR_WIDTH // 2 + 1 - len(middle) // 2) + middle
    scale = scale.ljust(BAR_WIDTH + 2 - len(str(BUCKETS))) + str(BUCKETS)
    lines += ["", scale, f"|{bar(layer)}|",
              f"each character: {BUCKETS_PER_CELL} buckets (upper case: all of them, lower "
              f"case: some)"]
    return "\n".join(lines)


def render_created(layer: Any) -> str:
    return f"created layer {layer['id']}, version {layer['version']}\n\n{render_layer(layer)}"


def render_patch(layer: Any) -> str:
    lines = patch_lines(layer, "the layer already was so", _change_value)
    if not layer.get("changed", True):
        return lines[0]
    return "\n".join([*lines, "", render_layer(layer)])


def _change_value(key: str, value: Any) -> str:
    if key.startswith("ranges."):
        return ranges_text(value)
    return "none" if value is None else str(value)


def render_audit(document: Any) -> str:
    return operator_render.render_audit(document, _change_lines)


def _change_lines(changes: dict[str, Any], created: bool) -> list[str]:
    """A layer change's lines: a creation's values, else ``old -> new``."""
    return [f"{key}: {_change_value(key, change['new'])}" if created
            else f"{key}: {_change_value(key, change['old'])} -> "
                 f"{_change_value(key, change['new'])}"
            for key, change in changes.items()]
