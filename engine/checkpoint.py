"""Checkpoints that survive crashes and load without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved with
`torch.save` and read back with `torch.load(weights_only=True)`, so opening a file from
somewhere else cannot run code. Every checkpoint names its `kind` ("retrain",
"hypernet", ...) so that one loop never resumes from another loop's file.

Random generators are stored as values that such a dict may hold: a numpy `Generator`
as the JSON of its bit generator's state, a torch `Generator` as its uint8 state tensor.

Example:
    save_checkpoint({"kind": "hypernet", "step": 10, "rng": numpy_rng_state(rng)}, path)
    state = load_checkpoint(path, expected_kind="hypernet")
    rng = numpy_rng_from_state(state["rng"])
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import CheckpointError, first_line

FORMAT = 1  # bumped when the layout of every checkpoint changes; loads refuse other values
_MAX_DETAIL = 160  # characters of a library's error message kept in ours


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Writes `state` to `path` atomically: readers see the old file or the new one, never half.

    The dict is written to a temporary file in the same directory, flushed to disk, and
    renamed over `path`, so a crash mid-write keeps the previous checkpoint intact.

    Args:
        state: a dict with a string under "kind"; values must be what
            `torch.load(weights_only=True)` accepts (tensors, numbers, strings, None,
            lists, tuples and dicts of those).
        path: the checkpoint file; missing parent directories are created.

    Raises:
        CheckpointError: `state` has no kind or holds something torch cannot save, or the
            file cannot be written.
    """
    path = Path(path)
    if not isinstance(state.get("kind"), str):
        raise CheckpointError(f"checkpoint {path}: the state needs a string 'kind'")
    payload = {**state, "format": FORMAT}
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its files are private (0600); this one gets the umask's usual mode.
        temporary = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
        _fsync_directory(path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: torch cannot save the state ({_one_line(exc)})") from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    expected_kind: str | None = None,
) -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint`, without unpickling arbitrary objects.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (the CPU by default, whatever device wrote them).
        expected_kind: when given, the checkpoint's kind must be this.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, from another
            format version, or of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types here (zip, pickle, EOF, OS)
        raise CheckpointError(f"checkpoint {path} is unreadable or not a checkpoint: {_one_line(exc)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("kind"), str):
        raise CheckpointError(f"checkpoint {path} is not a smash checkpoint (no kind)")
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format')!r}; this version reads format {FORMAT}"
        )
    if expected_kind is not None and state["kind"] != expected_kind:
        raise CheckpointError(
            f"checkpoint {path} is a {state['kind']!r} checkpoint, not a {expected_kind!r} one"
        )
    return state


def numpy_rng_state(rng: np.random.Generator) -> str:
    """The state of a numpy Generator as a JSON string (its integers exceed 64 bits)."""
    return json.dumps(rng.bit_generator.state)


def numpy_rng_from_state(state: str) -> np.random.Generator:
    """A numpy Generator in the state `numpy_rng_state` returned.

    Raises:
        CheckpointError: the string is not such a state.
    """
    try:
        data = json.loads(state)
        bit_generator = getattr(np.random, data["bit_generator"])()
        bit_generator.state = data
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"invalid numpy generator state: {_one_line(exc)}") from None
    return np.random.Generator(bit_generator)


def torch_rng_state(generator: torch.Generator) -> torch.Tensor:
    """The state of a torch Generator (any device) as a CPU uint8 tensor."""
    return generator.get_state().clone()


def set_torch_rng_state(generator: torch.Generator, state: torch.Tensor) -> None:
    """Puts `generator` back into a state `torch_rng_state` returned.

    Raises:
        CheckpointError: the tensor is not a state of this kind of generator.
    """
    try:
        generator.set_state(state.to("cpu", torch.uint8))
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"invalid torch generator state: {_one_line(exc)}") from None


# A CUDA generator's state: its Philox seed and offset, 8 bytes each. Checkpoints written
# before z was drawn on the CPU hold one as their z generator.
_CUDA_STATE_BYTES = 16


def cpu_generator_from_state(state: torch.Tensor) -> torch.Generator:
    """A CPU generator in the state `torch_rng_state` returned, whichever device wrote it.

    Every generator the engine checkpoints is a CPU generator, so a run checkpointed on
    a GPU resumes on a CPU worker and the reverse. A checkpoint written by older code
    may hold a CUDA generator's state (16 bytes: Philox seed and offset), which no CPU
    generator can continue: such a state reseeds a CPU generator with the first 8 bytes
    of the SHA-256 of those 16 bytes. The resumed run then draws other random values
    than the GPU would have, but always the same ones for the same checkpoint.

    Raises:
        CheckpointError: the tensor is neither a CPU nor a CUDA generator's state.
    """
    state = state.to("cpu", torch.uint8)
    generator = torch.Generator()
    if state.numel() == _CUDA_STATE_BYTES:
        digest = hashlib.sha256(bytes(state.tolist())).digest()
        return generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    set_torch_rng_state(generator, state)
    return generator


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message, shortened."""
    text = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


# Weights of a finished network ------------------------------------------------------------


def save_weights(model: nn.Module, path: Path) -> None:
    """Save a model's ``state_dict`` on the CPU, atomically (a temporary file, then a rename).

    Raises:
        CheckpointError: The file cannot be written.
    """
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise CheckpointError(f"cannot write weights {path}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` saved by ``save_weights``, read without unpickling code.

    Raises:
        CheckpointError: The file is missing or unreadable.
    """
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types here (zip, pickle, EOF, OS)
        raise CheckpointError(f"weights file {path} is unreadable: {_one_line(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"weights file {path} does not hold a state_dict")
    return state



__all__ = [
    "FORMAT",
    "CheckpointError",
    "cpu_generator_from_state",
    "load_checkpoint",
    "numpy_rng_from_state",
    "numpy_rng_state",
    "save_checkpoint",
    "set_torch_rng_state",
    "load_weights",
    "save_weights",
    "torch_rng_state",
]
