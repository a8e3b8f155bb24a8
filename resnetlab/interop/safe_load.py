"""Loading torch pickle files without ever running code from them.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; any other
global in the pickle (``os.system``, ``builtins.open``, a custom class...) stops the
unpickler before it is called. An explicit ``weights_only=True`` cannot be overridden by
the ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` environment variable. We turn its errors into
one-line :class:`CheckpointError` messages.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from resnetlab.errors import CheckpointError

# every opcode byte of every pickle protocol: an "unsupported operand" outside this set is
# not a pickle the weights-only unpickler refused but bytes that are no pickle at all
_PICKLE_OPCODES = frozenset(ord(op.code.encode("latin-1")) for op in pickletools.opcodes)


def is_torchscript_archive(path: str | Path) -> bool:
    """TorchScript archives carry code (``code/``), so we never load them as checkpoints."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist() if "/" in n)
    except (zipfile.BadZipFile, OSError):
        return False


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and containers; refusals become CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if is_torchscript_archive(path):
        raise CheckpointError(
            f"{path} is a TorchScript archive (it contains code); resnetlab does not load it "
            "as a checkpoint: use the .safetensors or training checkpoint it was exported from"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        operand = re.search(r"Unsupported operand (\d+)", text)
        if operand and int(operand.group(1)) not in _PICKLE_OPCODES:
            raise CheckpointError(
                f"cannot read {path} (truncated or corrupt?): byte {operand.group(1)} is "
                "not pickle data"
            ) from None
        forbidden = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        detail = f"forbidden global {forbidden.group(1)}" if forbidden else ""
        detail = detail or (operand.group(0) if operand else "")
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint and unpickling it "
            f"could run code{f' ({detail})' if detail else ''}; nothing from it was executed"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as e:
        msg = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read {path} (truncated or corrupt?): {msg}") from None
