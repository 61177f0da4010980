"""Reading a model's checkpoint files, with errors that name the file and what is wrong in it.

``torch.load`` stays ``weights_only=True``: a checkpoint is someone else's file,
and a full pickle would run whatever code it names.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clip_onnx.errors import CheckpointError
from clip_onnx.files import NotRegularFileError, open_regular


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; CheckpointError if it is unreadable, not JSON or not an object."""
    try:
        with open_regular(path) as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object, got a JSON {type(data).__name__}")
    return data


def check_config_types(config: Mapping, path: Path, ints: tuple[str, ...], triples: tuple[str, ...] = ()) -> None:
    """Refuse a config whose ``ints`` are not positive ints or whose ``triples`` (when set) are not three numbers."""
    for key in ints:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{str(path)!r}: {key!r} must be a positive int, got {value!r:.60}")
    for key in triples:
        value = config.get(key)
        if value is not None and not (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise CheckpointError(f"{str(path)!r}: {key!r} must be a list of three numbers, got {value!r:.60}")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weights-only state dict from ``path``; CheckpointError naming the file otherwise."""
    try:
        with open_regular(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except NotRegularFileError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is {exc.kind}, not a regular file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a weights-only PyTorch file ({_reason(exc)}); "
            "clip-onnx loads only tensors, never pickled code: re-save it with "
            "torch.save(model.state_dict(), path)"
        ) from None
    except Exception as exc:  # a damaged zip or pickle raises RuntimeError, EOFError, ValueError...
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged or not a PyTorch file: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state dict of named tensors"
        )
    return state


def _reason(exc: Exception) -> str:
    """The specific line of torch's weights-only refusal, without its advice to load with weights_only=False."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return (specific[0] if specific else type(exc).__name__)[:200]


def load_into(model: torch.nn.Module, state: Mapping[str, Any], path: Path, what: str) -> None:
    """``model.load_state_dict(state)``, or CheckpointError listing the missing, unexpected and mis-sized keys."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        detail = "; ".join(lines)[:600] or str(exc)[:600]
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the {what} its config.json describes: {detail}"
        ) from None
