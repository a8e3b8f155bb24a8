"""Fetch a published file once: MD5-checked, atomically renamed, safely extracted.

A download goes to ``<name>.part`` and is renamed only after its MD5 matches the
published one, so an interrupted or corrupt transfer never looks like a complete
archive. Every failure is one ``DataError`` line that says which file to put where.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from resnetlab.errors import DataError

CHUNK = 1 << 20


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None, *, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; check ``md5``; rename into place."""
    dest = Path(dest)
    hint = f"download {url} yourself and put it at {dest}" + (f" (md5 {md5})" if md5 else "")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest.parent}: {e.strerror}") from None
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, leave=False, disable=None
            ) as bar:
                while block := resp.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"cannot download {url} ({reason}); {hint}") from None
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for {url} (md5 {got}, expected {md5}); {hint}")
    os.replace(part, dest)
    return dest


def fetch(url: str, dest: Path, md5: str | None, *, allow_download: bool = True) -> Path:
    """``dest`` if it exists (checked against ``md5``), else downloaded when allowed."""
    dest = Path(dest)
    if dest.is_file():
        if md5 is not None and md5sum(dest) != md5:
            raise DataError(
                f"{dest} is corrupt or incomplete (md5 does not match {md5}); delete it to re-download"
            )
        return dest
    if not allow_download:
        raise DataError(f"{dest.name} not found; put it at {dest} (from {url})")
    return download(url, dest, md5)


def safe_extract(archive: Path, dest_dir: Path) -> None:
    """Extract a tar archive into ``dest_dir``, refusing (before writing anything) any
    member that would land outside it: absolute paths, ``..``, links, devices."""
    root = Path(dest_dir).resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()) or not (root / m.name).resolve().is_relative_to(
                    root
                ):
                    raise DataError(
                        f"unsafe member {m.name!r} in {archive}; refusing to extract it"
                    )
            root.mkdir(parents=True, exist_ok=True)
            for m in members:
                tar.extract(m, root, set_attrs=False, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"cannot extract {archive} ({e}); delete it to re-download") from None
