"""The run folder: its layout, its lock, and its recovery after a crash.

Every file a run writes is named here and nowhere else. Paths are relative to the
folder itself, so a run folder can be copied or moved and resumed from anywhere:

    config.json         what the run is (TrainConfig, model, data, environment)
    metrics.csv         one row per evaluation; tensorboard/ mirrors it
    checkpoints/last.pt the whole TrainState, written atomically
    checkpoints/best.pt the same at the best validation error
    results.json, model.safetensors, curves.png   written when the run finishes
    .lock               held (flock) by the one process that writes the folder

A crash can leave a temporary file (``.NAME.*.tmp``) or a folder whose first checkpoint
was never completed; the former is removed when the folder is next opened, the latter
counts as a run that has not started yet, so it can be restarted or resumed from zero.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO

from resnetlab.atomic import nearest_existing
from resnetlab.errors import ResnetlabError

CONFIG = "config.json"
METRICS = "metrics.csv"
RESULTS = "results.json"
WEIGHTS = "model.safetensors"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"


class RunFolderError(ResnetlabError):
    pass


class RunFolder:
    """One training run's folder (see the module docstring for its layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_file: IO[str] | None = None
        self._created = False

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- layout -------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    # -- state --------------------------------------------------------------------
    def checkpoint_to_resume(self) -> Path | None:
        """last.pt, or best.pt when a crash came between writing the two; None if neither."""
        for path in (self.last, self.best):
            if path.is_file():
                return path
        return None

    def is_finished(self) -> bool:
        return self.results.is_file()

    def holds_run(self) -> bool:
        """A run that saved at least one checkpoint (so starting afresh would lose work)."""
        return self.checkpoint_to_resume() is not None

    # -- claiming the folder ----------------------------------------------------------
    def check_writable(self) -> None:
        """Fail early, before data or model are loaded, if the folder cannot be written."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out {self.path} is a file, not a folder")
        parent = nearest_existing(self.path)
        if not parent.is_dir():
            raise RunFolderError(f"cannot create run folder {self.path}: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunFolderError(f"cannot write run folder {self.path}: {parent} is read-only")

    def acquire(self) -> None:
        """Create the folder if needed and hold its lock until ``release``.

        A second process on the same folder gets a one-line error instead of mixing its
        outputs with the first one's. Stale temporary files of crashed writers go.
        """
        import fcntl

        self.check_writable()
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = (self.path / LOCK).open("a+")
        except OSError as e:
            raise RunFolderError(
                f"cannot create run folder {self.path}: {e.strerror or e}"
            ) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunFolderError(
                    f"{self.path} is in use by {holder}; wait for it to finish or choose "
                    "another --out"
                ) from None
            raise RunFolderError(f"cannot lock {self.path}: {e.strerror or e}") from None
        f.seek(0)
        f.truncate()
        f.write(f"resnetlab process {os.getpid()}\n")
        f.flush()
        self._lock_file = f
        self.remove_stale_temporaries()

    def release(self, *, discard_if_empty: bool = False) -> None:
        """Drop the lock; with ``discard_if_empty``, remove a folder this process created
        and wrote nothing else into (a run refused before it started leaves no trace)."""
        if self._lock_file is None:
            return
        self._lock_file.close()
        self._lock_file = None
        if discard_if_empty and self._created:
            with contextlib.suppress(OSError):
                (self.path / LOCK).unlink()
                self.path.rmdir()

    def remove_stale_temporaries(self) -> list[Path]:
        removed = []
        for folder in (self.path, self.checkpoints):
            if folder.is_dir():
                for p in folder.glob(f".*{TMP_SUFFIX}"):
                    with contextlib.suppress(OSError):
                        p.unlink()
                        removed.append(p)
        return removed

    def discard_unstarted(self) -> None:
        """Forget a run that never completed a checkpoint (config, metrics, events)."""
        import shutil

        for p in (self.config, self.metrics):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
