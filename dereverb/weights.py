"""Reading checkpoint files as data only: the one place where ``torch.load`` is called on a checkpoint.

``torch.load(..., weights_only=True)`` is PyTorch's own restricted unpickler (tensors and plain
containers only). It is passed explicitly, so neither torch's default nor the environment variable
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` can turn it off; a refused file is one line naming it.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings

import torch

from dereverb.errors import CheckpointError

__all__ = ["CheckpointError", "load_weights"]

REMEDY = "delete that checkpoint folder or choose another run folder"


def _unsafe_reason(err: Exception) -> str:
    """What the weights-only unpickler refused, in a few words (torch's message is a page of advice)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if found:
        return f"it would run {found.group(1)} when loaded"
    detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()
    return detail[0].rstrip(".") if detail and detail[0] else type(err).__name__


def load_weights(path: str | os.PathLike, remedy: str = REMEDY):
    """Read a parameter file of a checkpoint as data only: ``torch.load(path, weights_only=True)`` on the CPU.

    ``weights_only=True`` is passed explicitly, so neither torch's default nor the environment
    variable ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` can turn it off: a file that would import or call
    anything beyond tensors and plain containers is refused before any of it runs.

    Args:
        path: a ``*.ckpt`` file written by ``torch.save``.
        remedy: what the error message tells the user to do.

    Returns:
        The stored object (a state dict: tensors, numbers, strings, lists and dicts).

    Raises:
        CheckpointError: the file is not a plain weights file, or cannot be read; one line naming it.
    """
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unsafe_reason(err)
        raise CheckpointError(f"{path}: not a plain weights file ({reason}); {remedy}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:  # truncated, corrupt or unreadable
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: cannot be read ({reason}); {remedy}") from None
