"""A text diagram of an architecture, read from its stored spec JSON.

The app must not load torch, so this reads the JSON the engine writes
(``engine.arch.Architecture.to_dict``) directly; an nb201 cell is drawn by
``engine.nb201.cell``, which is torch-free::

    {"schema": 1, "stem_kernel": 3,
     "blocks": [{"in_channels": 16, "bank_size": 8,
                 "ops": [{"reads": [0], "writes": [2], "units": 8, "bottleneck": 16,
                          "convs": [{"kernel": [3, 3], "dilation": [1, 1], "groups": 1},
                                    null, null, null]}]}]}

An op reads banks, runs a 1x1 bottleneck, then path A (conv 0 -> conv 1) plus,
when active, path B (conv 2 -> conv 3), and writes its output to banks.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text


def _conv(conv: dict[str, Any]) -> str:
    kernel = conv.get("kernel", [0, 0])
    dilation = conv.get("dilation", [1, 1])
    text = f"{kernel[0]}x{kernel[1]}" if kernel[0] != kernel[1] else f"{kernel[0]}x{kernel[0]}"
    if list(dilation) != [1, 1]:
        text += (
            f" d{dilation[0]}" if dilation[0] == dilation[1] else f" d{dilation[0]},{dilation[1]}"
        )
    if conv.get("groups", 1) != 1:
        text += f" g{conv['groups']}"
    return text


def _path(first: dict[str, Any] | None, second: dict[str, Any] | None) -> str:
    parts = [_conv(conv) for conv in (first, second) if conv is not None]
    return " → ".join(parts)


def _banks(indices: list[int]) -> str:
    return ",".join(str(index) for index in indices)


def op_line(op: dict[str, Any]) -> str:
    """One op as text: "[0,1]→[3]  16ch  bn16  3x3 → 5x5 d2 ‖ 3x3 g2".

    Reads and writes are bank indices; ``bn`` is the 1x1 bottleneck's width;
    ``‖`` separates path A from path B; ``d`` is the dilation, ``g`` the groups.
    """
    convs = list(op.get("convs", [])) + [None] * 4
    body = _path(convs[0], convs[1])
    other = _path(convs[2], convs[3])
    if other:
        body = f"{body} ‖ {other}"
    return (
        f"[{_banks(op.get('reads', []))}]→[{_banks(op.get('writes', []))}]  "
        f"{op.get('units', '?')}ch  bn{op.get('bottleneck', '?')}  {body}"
    )


def spec_diagram(spec: str) -> Text:
    """The architecture as a multi-line diagram: the stem, then per block its banks and ops.

    Args:
        spec: The stored spec JSON text.

    Returns:
        Rich text; a spec that cannot be read gives a one-line explanation instead.
    """
    try:
        data = json.loads(spec)
        if data.get("kind") == "nb201":  # a NAS-Bench-201 cell: its nodes (torch-free engine code)
            from engine.nb201.cell import Cell, describe_cell

            return Text("\n".join(describe_cell(Cell.from_dict(data))))
        blocks = data["blocks"]
        text = Text()
        text.append("op: reads→writes  out channels  bottleneck  path A ‖ path B\n", style="dim")
        text.append(f"stem {data.get('stem_kernel', '?')}x{data.get('stem_kernel', '?')} conv\n")
        for number, block in enumerate(blocks, start=1):
            bank = int(block["bank_size"])
            initial = int(block["in_channels"]) // bank if bank else 0
            banks = initial
            for op in block["ops"]:
                banks = max(banks, max(op.get("writes", [-1]), default=-1) + 1)
            text.append(f"block {number}", style="bold")
            text.append(
                f"  {block['in_channels']}ch in · {bank}-ch banks {initial}→{banks} · "
                f"{banks * bank}ch out\n",
                style="dim",
            )
            for index, op in enumerate(block["ops"], start=1):
                text.append(f"  op{index:<2} ", style="cyan")
                text.append(op_line(op) + "\n")
        text.rstrip()
        return text
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return Text(f"cannot draw this spec ({type(exc).__name__}: {exc})", style="red")
