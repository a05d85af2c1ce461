"""The downloader against a local HTTP server (127.0.0.1, never the network) serving copies
of the real MNIST test-split files."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sparsekit.data import check_file, download_dataset, ensure_files, load_mnist
from sparsekit.data.download import FolderError
from sparsekit.data.sources import FASHION_MNIST, MNIST, DataFile
from sparsekit.errors import DataError, DownloadError
from sparsekit.testing import mnist_data_dir

SHARED = mnist_data_dir()
TEST_FILES = [spec.name for spec in MNIST.splits["test"]]


@pytest.fixture(scope="module")
def real_files() -> dict[str, bytes]:
    if not (SHARED / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {SHARED}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA to a folder holding mnist/"
        )
    return {name: (SHARED / "mnist" / name).read_bytes() for name in TEST_FILES}


class Server:
    """A tiny HTTP server; ``routes`` maps a path to bytes or to a handler function."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes | Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                elif callable(route):
                    route(self)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def _dead_url() -> str:
    """A URL on a local port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _serve(server: Server, files: dict[str, bytes], prefix: str = "/") -> None:
    for name, data in files.items():
        server.routes[prefix + name] = data


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_keeps(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    _serve(server, real_files)
    calls: list[tuple[str, int, int | None]] = []
    folder = download_dataset(
        "mnist",
        tmp_path,
        split="test",
        mirrors=[server.url],
        progress=lambda name, done, total: calls.append((name, done, total)),
    )
    assert folder == tmp_path / "mnist"
    assert _leftovers(folder) == sorted(TEST_FILES)
    for name in TEST_FILES:
        assert (folder / name).read_bytes() == real_files[name]
        final = [c for c in calls if c[0] == name][-1]
        assert final == (name, len(real_files[name]), len(real_files[name]))
    ds = load_mnist(tmp_path, split="test")
    assert len(ds) == 10000


def test_load_mnist_downloads_when_asked(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    _serve(server, real_files)
    with pytest.raises(DataError, match="not found"):
        load_mnist(tmp_path, split="test")
    assert server.requests == []
    ds = load_mnist(tmp_path, split="test", download=True, mirrors=[server.url], subset=5)
    assert len(ds) == 5
    # The test split, then the other split too (which this server lacks: that is no error).
    wanted = sorted("/" + n for n in TEST_FILES)
    assert sorted(server.requests[: len(wanted)]) == wanted
    assert {"/" + spec.name for spec in MNIST.splits["train"]} <= set(server.requests)


def test_a_download_fetches_the_other_split_too(tmp_path: Path, server: Server) -> None:
    files = {
        spec.name: (SHARED / "mnist" / spec.name).read_bytes()
        for split in MNIST.splits.values()
        for spec in split
    }
    _serve(server, files)
    load_mnist(tmp_path, split="train", download=True, mirrors=[server.url], subset=5)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(files)
    assert len(load_mnist(tmp_path, split="test")) == 10000  # no second download needed


def test_present_valid_files_are_not_downloaded_again(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in TEST_FILES:
        shutil.copyfile(SHARED / "mnist" / name, folder / name)
    # one of them stored uncompressed: also accepted as present
    raw = folder / TEST_FILES[1][:-3]
    raw.write_bytes(gzip.decompress((folder / TEST_FILES[1]).read_bytes()))
    (folder / TEST_FILES[1]).unlink()
    _serve(server, real_files)
    download_dataset("mnist", tmp_path, split="test", mirrors=[server.url])
    load_mnist(tmp_path, split="test", download=True, mirrors=[server.url])
    assert server.requests == []
    assert _leftovers(folder) == sorted([TEST_FILES[0], raw.name])


def test_checksum_mismatch_not_kept(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    _serve(server, real_files)
    labels = TEST_FILES[1]
    content = bytearray(gzip.decompress(real_files[labels]))
    content[-1] = (content[-1] + 1) % 10  # a valid IDX file, one label changed
    server.routes["/" + labels] = gzip.compress(bytes(content))
    with pytest.raises(DownloadError) as excinfo:
        download_dataset("mnist", tmp_path, split="test", mirrors=[server.url])
    text = str(excinfo.value)
    assert "\n" not in text
    assert "checksum mismatch" in text and labels in text
    assert str(tmp_path / "mnist") in text
    # the images were fine and are kept; nothing of the labels is left behind
    assert _leftovers(tmp_path / "mnist") == [TEST_FILES[0]]


def test_connection_dropped_half_way(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    images = TEST_FILES[0]
    data = real_files[images]

    def drop(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        handler.wfile.flush()
        handler.close_connection = True

    server.routes["/" + images] = drop
    spec = MNIST.splits["test"][0]
    with pytest.raises(DownloadError, match="connection closed after") as excinfo:
        ensure_files(MNIST, tmp_path / "mnist", [spec], mirrors=[server.url], timeout=5)
    assert "\n" not in str(excinfo.value)
    assert _leftovers(tmp_path / "mnist") == []

    # the next mirror is tried after a dropped connection
    second = Server()
    try:
        _serve(second, real_files)
        ensure_files(MNIST, tmp_path / "mnist", [spec], mirrors=[server.url, second.url], timeout=5)
    finally:
        second.close()
    assert _leftovers(tmp_path / "mnist") == [images]


def test_first_mirror_down_second_used(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    _serve(server, real_files, prefix="/mirror/")
    download_dataset(
        "mnist", tmp_path, split="test", mirrors=[_dead_url(), server.url + "mirror/"], timeout=5
    )
    assert _leftovers(tmp_path / "mnist") == sorted(TEST_FILES)
    assert len(load_mnist(tmp_path, split="test")) == 10000


def test_all_mirrors_fail_one_line(tmp_path: Path, server: Server) -> None:
    with pytest.raises(DownloadError) as excinfo:
        download_dataset("mnist", tmp_path, mirrors=[_dead_url(), server.url], timeout=5)
    text = str(excinfo.value)
    assert "\n" not in text
    for spec in MNIST.files():
        assert spec.name in text
    assert str(tmp_path / "mnist") in text
    assert "HTTP 404" in text
    assert _leftovers(tmp_path / "mnist") == []


def test_invalid_present_file_is_replaced(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    labels = TEST_FILES[1]
    (folder / labels).write_bytes(real_files[labels][:100])  # a broken leftover
    _serve(server, real_files)
    download_dataset("mnist", tmp_path, split="test", mirrors=[server.url])
    assert (folder / labels).read_bytes() == real_files[labels]


def test_unwritable_folder(tmp_path: Path, server: Server) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FolderError, match="cannot create the data folder") as excinfo:
        download_dataset("mnist", blocker, split="test", mirrors=[server.url])
    assert "\n" not in str(excinfo.value)
    assert server.requests == []


def test_fashion_checked_by_md5_of_gz(tmp_path: Path, server: Server) -> None:
    payload = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]), mtime=0)
    spec = DataFile("tiny-idx1-ubyte.gz", (3,), md5_gz=hashlib.md5(payload).hexdigest())
    server.routes["/tiny-idx1-ubyte.gz"] = payload
    paths = ensure_files(FASHION_MNIST, tmp_path, [spec], mirrors=[server.url])
    assert paths[spec.name].read_bytes() == payload
    assert check_file(paths[spec.name], spec) is None
    bad = DataFile("tiny-idx1-ubyte.gz", (3,), md5_gz="0" * 32)
    assert "md5" in (check_file(paths[spec.name], bad) or "")
    # structure-only check for a file without a known checksum
    raw = tmp_path / "raw-idx1-ubyte"
    raw.write_bytes(gzip.decompress(payload))
    assert check_file(raw, DataFile("raw-idx1-ubyte.gz", (3,))) is None
    assert "shape" in (check_file(raw, DataFile("raw-idx1-ubyte.gz", (4,))) or "")
    np.testing.assert_array_equal(np.frombuffer(raw.read_bytes()[8:], np.uint8), [1, 2, 3])


def test_load_mnist_replaces_corrupt_file_when_downloading(
    tmp_path: Path, server: Server, real_files: dict[str, bytes]
) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in TEST_FILES:
        shutil.copyfile(SHARED / "mnist" / name, folder / name)
    images = folder / TEST_FILES[0]
    images.write_bytes(real_files[TEST_FILES[0]][:5000])
    with pytest.raises(DataError, match="corrupt gzip|truncated"):
        load_mnist(tmp_path, split="test")
    _serve(server, real_files)
    assert len(load_mnist(tmp_path, split="test", download=True, mirrors=[server.url])) == 10000
    assert server.requests == ["/" + TEST_FILES[0]]
    assert images.read_bytes() == real_files[TEST_FILES[0]]
