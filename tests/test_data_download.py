"""The download path against a local HTTP server on 127.0.0.1 (started by the test):
good checksum, bad checksum, refused connection; never a complete-looking partial file."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from data_fixtures import write_cifar_archive

from resnetlab.data import cifar as cifar_mod
from resnetlab.data import open_dataset
from resnetlab.data.download import download
from resnetlab.errors import DataError


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", files
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_good_checksum(tmp_path: Path, server: tuple[str, dict[str, bytes]]) -> None:
    url, files = server
    files["blob.bin"] = b"x" * 3_000_000
    dest = download(
        url + "blob.bin", tmp_path / "d" / "blob.bin", hashlib.md5(files["blob.bin"]).hexdigest()
    )
    assert dest.read_bytes() == files["blob.bin"]
    assert not list(tmp_path.glob("d/*.part"))


def test_download_bad_checksum_leaves_nothing(
    tmp_path: Path, server: tuple[str, dict[str, bytes]]
) -> None:
    url, files = server
    files["blob.bin"] = b"corrupted"
    with pytest.raises(DataError, match=r"checksum mismatch for .*blob.bin .*put it at") as e:
        download(url + "blob.bin", tmp_path / "blob.bin", "0" * 32)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_download_http_error_and_refused_connection(
    tmp_path: Path, server: tuple[str, dict[str, bytes]]
) -> None:
    url, _ = server
    with pytest.raises(DataError, match=r"cannot download .*missing\.bin"):
        download(url + "missing.bin", tmp_path / "missing.bin", None)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(
        DataError,
        match=r"cannot download http://127.0.0.1:\d+/x.tar.gz \(.*refused.*\); download .* and put it at .*x.tar.gz \(md5 ",
    ) as e:
        download(f"http://127.0.0.1:{port}/x.tar.gz", tmp_path / "x.tar.gz", "a" * 32)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_open_dataset_downloads_cifar10(
    tmp_path: Path, server: tuple[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, files = server
    arc = write_cifar_archive(
        tmp_path / "src" / "cifar-10-python.tar.gz", "cifar10", list(range(10)) * 2, [4, 2]
    )
    files["cifar-10-python.tar.gz"] = arc.read_bytes()
    a = cifar_mod.ARCHIVES["cifar10"]
    md5 = hashlib.md5(files["cifar-10-python.tar.gz"]).hexdigest()
    monkeypatch.setattr(cifar_mod, "BASE_URL", url)
    monkeypatch.setitem(
        cifar_mod.ARCHIVES,
        "cifar10",
        cifar_mod.Archive(a.filename, md5, a.folder, a.train, a.test, a.meta),
    )
    b = open_dataset("cifar10", data_dir=tmp_path / "data")
    assert b.train.labels.tolist() == list(range(10)) * 2
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").is_file()
    # wrong published checksum: nothing left that looks like the archive
    monkeypatch.setitem(
        cifar_mod.ARCHIVES,
        "cifar10",
        cifar_mod.Archive(a.filename, "f" * 32, a.folder, a.train, a.test, a.meta),
    )
    with pytest.raises(DataError, match="checksum mismatch"):
        open_dataset("cifar10", data_dir=tmp_path / "other")
    assert not (tmp_path / "other" / "cifar-10-python.tar.gz").exists()
