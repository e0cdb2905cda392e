"""Search spaces of every kind, by preset name and by stored dict (torch-free).

`engine.kinds` reaches a space's loops; this module only knows the space values, so
the command line and the app can list presets and read stored experiments without
loading torch. A stored dict names its kind under "kind"; one without is a banks space
(every experiment stored before kinds existed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.config import HyperNetConfig
from engine.nb201.space import PRESETS as NB201_PRESETS
from engine.nb201.space import CellSpace
from engine.space import KIND as BANKS
from engine.space import PRESETS as BANKS_PRESETS
from engine.space import InvalidSearchSpace, SearchSpace

Space = Any  # a SearchSpace or a CellSpace
SPACE_TYPES: dict[str, type] = {BANKS: SearchSpace, CellSpace.kind: CellSpace}
PRESETS: dict[str, Space] = {**BANKS_PRESETS, **NB201_PRESETS}


def get_preset(name: str) -> Space:
    """The named preset of any kind.

    Raises:
        InvalidSearchSpace: listing the known names.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidSearchSpace(f"unknown preset '{name}' (known: {', '.join(PRESETS)})") from None


def space_from_dict(data: Mapping[str, Any]) -> Space:
    """A space from its stored dict, by its "kind" (none: banks).

    Raises:
        InvalidSearchSpace: not a dict, an unknown kind, or a space its kind refuses.
    """
    if not isinstance(data, Mapping):
        raise InvalidSearchSpace(f"a search space must be an object, got {type(data).__name__}")
    kind = data.get("kind", BANKS)
    if kind not in SPACE_TYPES:
        raise InvalidSearchSpace(f"unknown search-space kind {kind!r} (known: {', '.join(SPACE_TYPES)})")
    return SPACE_TYPES[kind].from_dict(dict(data))  # type: ignore[attr-defined]  # InvalidCellSpace is an InvalidSearchSpace


def network_meta(space: Space, num_classes: int, in_channels: int, hypernet: Any, **extra: Any) -> dict[str, Any]:
    """The part of a SMASH network's checkpoint meta that every kind writes the same way.

    `hypernet` is its `HyperNetConfig` (a dataclass); `extra` holds the kind's own fields.
    """
    return {
        "kind": space.kind,
        "space": space.to_dict(),
        "num_classes": num_classes,
        "in_channels": in_channels,
        "hypernet": dataclasses.asdict(hypernet),
        **extra,
    }


def hypernet_from_meta(meta: Mapping[str, Any]) -> HyperNetConfig:
    """The HyperNet config `network_meta` stored (JSON lists back to tuples)."""
    return HyperNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["hypernet"].items()})


__all__ = ["PRESETS", "SPACE_TYPES", "Space", "get_preset", "hypernet_from_meta", "network_meta", "space_from_dict"]
