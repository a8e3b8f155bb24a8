"""Fashion-MNIST from its four official IDX files (gzip), one grey channel.

Looked up in ``data_dir``, then in Debian's ``dataset-fashion-mnist`` folder, then
downloaded. Debian recompresses the files, so local copies are validated by their
IDX headers rather than the published MD5 (which still guards every download).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from resnetlab.data.common import InMemorySplit
from resnetlab.data.download import download
from resnetlab.errors import DataError

BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (magic 0x0000 08 ndim, big-endian sizes, uint8 payload) as an array."""
    try:
        raw = (
            gzip.decompress(Path(path).read_bytes())
            if str(path).endswith(".gz")
            else Path(path).read_bytes()
        )
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(f"{path} is not an IDX file of {ndim} dimension(s) of uint8")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(
            f"{path} is truncated: header says {shape}, payload has {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def locate(
    filename: str, data_dir: Path, *, allow_download: bool, system_dir: Path = SYSTEM_DIR
) -> Path:
    for d in (Path(data_dir) / "fashion-mnist", Path(data_dir), system_dir):
        if (d / filename).is_file():
            return d / filename
    dest = Path(data_dir) / "fashion-mnist" / filename
    if not allow_download:
        raise DataError(
            f"{filename} not found; put it in {dest.parent} (or install dataset-fashion-mnist)"
        )
    return download(BASE_URL + filename, dest, FILES[filename])


def load_fashion_mnist(
    data_dir: Path, *, download: bool = True, strict: bool = False, system_dir: Path = SYSTEM_DIR
) -> tuple[InMemorySplit, InMemorySplit, list[str]]:
    def split(prefix: str) -> InMemorySplit:
        imgs = read_idx(
            locate(
                f"{prefix}-images-idx3-ubyte.gz",
                data_dir,
                allow_download=download,
                system_dir=system_dir,
            ),
            3,
        )
        labs = read_idx(
            locate(
                f"{prefix}-labels-idx1-ubyte.gz",
                data_dir,
                allow_download=download,
                system_dir=system_dir,
            ),
            1,
        )
        if len(imgs) != len(labs):
            raise DataError(f"Fashion-MNIST {prefix}: {len(imgs)} images but {len(labs)} labels")
        y = labs.astype(np.int64)
        bad = y >= len(CLASSES)
        if bad.any():
            from resnetlab.data.common import report_skipped

            report_skipped(
                [f"label {int(y[bad][0])} out of range"] * int(bad.sum()),
                strict=strict,
                what=f"Fashion-MNIST {prefix} images",
            )
            imgs, y = imgs[~bad], y[~bad]
        x = torch.from_numpy(np.ascontiguousarray(imgs)).unsqueeze(1)
        return InMemorySplit(x, torch.from_numpy(y), list(CLASSES))

    return split("train"), split("t10k"), list(CLASSES)
