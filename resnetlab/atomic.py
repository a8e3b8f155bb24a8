"""Writing output files whole or not at all.

Every file resnetlab writes (weights, exports, checkpoints, run configs and results)
goes to a temporary file in the target's folder first and is renamed into place only once complete (and checked, where a check
is given): a full disk, a crash or a failed check never leaves a truncated file under
the final name, and the temporary file is removed on failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from resnetlab.errors import CheckpointError


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists: where a new file or folder would go."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | Path) -> Path:
    """Refuse an output path that cannot be written, before any expensive work."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot write {path}: it is a directory")
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise CheckpointError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write {path}: {parent} is not writable")
    return path


def write_atomic(
    path: str | Path,
    write: Callable[[BinaryIO], object],
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """``write(f)`` into a temporary file beside ``path``, ``verify(tmp)`` it, rename it.

    An OSError (ENOSPC, EACCES...) becomes ``CheckpointError("cannot write PATH: ...")``;
    any failure removes the temporary file and leaves an existing ``path`` untouched.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # O_EXCL: never follow a planted link; mode 0o666 & umask, as a plain open() would
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        tmp = name
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only report itself here
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    except RuntimeError as e:
        if "unexpected pos" not in str(e):  # torch.save's report of a failed write
            raise
        raise CheckpointError(f"cannot write {path}: no space left on device?") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())
