"""Downloading MNIST and Fashion-MNIST from public mirrors, verified by checksum.

Mirrors are tried in order. Each file is written under a temporary name in its destination
folder and renamed to its final name only after its checksum matches (see
:mod:`sparsekit.data.sources` for which checksum each data set has), so an interrupted or
corrupt download never leaves a file that looks complete. A file that is already present and
valid is not downloaded again. Only the standard library (``urllib``) is used; progress is
reported through an optional callback so that the library never depends on a UI package.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sparsekit.data.idx import is_gzip, read_idx, sha256_uncompressed
from sparsekit.data.paths import find_data_file, resolve_data_dir
from sparsekit.data.sources import SOURCES, DataFile, DataSource
from sparsekit.errors import DataError, DownloadError, ParameterError
from sparsekit.files import os_reason, remove_quietly, temp_path_for

#: ``progress(filename, bytes_done, total_bytes_or_None)``, called as a download advances.
ProgressCallback = Callable[[str, int, "int | None"], None]

_CHUNK = 1 << 16
_USER_AGENT = "sparsekit (+https://pypi.org/project/sparsekit/)"


def get_source(kind: str) -> DataSource:
    """The :class:`DataSource` for ``kind`` ("mnist" or "fashion-mnist")."""
    try:
        return SOURCES[kind]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise ParameterError(f"unknown data set {kind!r} (known: {known})") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
    return digest.hexdigest()


def check_file(path: Path, spec: DataFile) -> str | None:
    """Why ``path`` is not a valid copy of ``spec`` (one line), or ``None`` if it is.

    Uses the SHA-256 of the uncompressed content when it is known, else the published MD5 of
    the ``.gz`` file (only applicable to a gzip file), else the IDX structure and shape.
    """
    try:
        if spec.sha256 is not None:
            got = sha256_uncompressed(path)
            if got != spec.sha256:
                return (
                    f"checksum mismatch (sha256 of the uncompressed content is {got}, "
                    f"expected {spec.sha256})"
                )
            return None
        if spec.md5_gz is not None and is_gzip(path):
            got = _md5(path)
            if got != spec.md5_gz:
                return f"checksum mismatch (md5 of the .gz file is {got}, expected {spec.md5_gz})"
            return None
        arr = read_idx(path, mmap=True)
        if tuple(arr.shape) != spec.shape:
            return f"shape {tuple(arr.shape)} differs from the expected {spec.shape}"
        return None
    except DataError as exc:
        return str(exc).split(": ", 1)[-1] if str(exc).startswith(str(path)) else str(exc)


class _FetchFailed(Exception):
    """One mirror did not deliver the file (the reason is the message)."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


class FolderError(DownloadError):
    """The destination folder cannot be created or written to."""


def _folder_error(path: Path, exc: BaseException) -> FolderError:
    return FolderError(
        f"cannot write into the data folder {path.parent} ({os_reason(exc)}); choose another "
        "data directory with --data or SPARSEKIT_DATA"
    )


def _fetch(
    url: str, dest: Path, name: str, progress: ProgressCallback | None, timeout: float
) -> None:
    """Download ``url`` into the new file ``dest``; raises ``_FetchFailed`` with a reason."""
    try:
        out = open(dest, "xb")  # noqa: SIM115
    except OSError as exc:
        raise _folder_error(dest, exc) from None
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with out:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length is not None and length.isdigit() else None
                done = 0
                if progress is not None:
                    progress(name, 0, total)
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise _folder_error(dest, exc) from None
                    done += len(chunk)
                    if progress is not None:
                        progress(name, done, total)
        except DownloadError:
            raise
        except urllib.error.HTTPError as exc:
            raise _FetchFailed(f"HTTP {exc.code} {exc.reason}".strip()) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = os_reason(reason) if isinstance(reason, BaseException) else str(reason)
            raise _FetchFailed(text, unreachable=True) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _FetchFailed(os_reason(exc) or type(exc).__name__) from None
    if total is not None and done != total:
        raise _FetchFailed(f"connection closed after {done} of {total} bytes")
    if done == 0:
        raise _FetchFailed("the server sent an empty file")


def _join(mirror: str, name: str) -> str:
    return mirror if mirror.endswith(name) else mirror.rstrip("/") + "/" + name


def _needed_message(source: DataSource, folder: Path, files: Sequence[DataFile]) -> str:
    names = ", ".join(f.name for f in files)
    return (
        f"put the {source.title} files {names} (gzipped or not) into {folder}, "
        f"or check your connection and run `sparsekit download {source.kind}` again"
    )


def _try_mirrors(
    folder: Path,
    spec: DataFile,
    mirrors: Sequence[str],
    progress: ProgressCallback | None,
    timeout: float,
    unreachable: set[str],
) -> Path | list[str]:
    """The verified file's final path, or the list of each mirror's failure. Mirrors that
    could not be reached are added to ``unreachable`` and skipped for later files."""
    failures: list[str] = []
    for mirror in mirrors:
        url = _join(mirror, spec.name)
        if mirror in unreachable:
            failures.append(f"{mirror}: skipped, unreachable")
            continue
        tmp: Path | None = temp_path_for(folder / spec.name)
        try:
            try:
                _fetch(url, tmp, spec.name, progress, timeout)
            except _FetchFailed as exc:
                failures.append(f"{url}: {exc}")
                if exc.unreachable:
                    unreachable.add(mirror)
                continue
            reason = check_file(tmp, spec)
            if reason is not None:
                failures.append(f"{url}: {reason}")
                continue
            stem = spec.name[:-3] if spec.name.endswith(".gz") else spec.name
            final = folder / (spec.name if is_gzip(tmp) else stem)
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise _folder_error(final, exc) from None
            tmp = None
            other = folder / (stem if final.name == spec.name else spec.name)
            if other.exists():  # a stale copy under the other name would shadow this one
                remove_quietly(other)
            return final
        finally:
            remove_quietly(tmp)
    return failures


def _prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderError(
            f"cannot create the data folder {folder} ({os_reason(exc)}); choose another data "
            "directory with --data or SPARSEKIT_DATA"
        ) from None


def fetch_file(
    source: DataSource,
    folder: Path,
    spec: DataFile,
    *,
    mirrors: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download one file of ``source`` into ``folder``, trying each mirror in turn.

    Returns the final path. Raises :class:`DownloadError` (one line, every mirror's reason)
    if no mirror gave a file that passes its checksum.
    """
    return ensure_files(
        source, folder, [spec], mirrors=mirrors, progress=progress, timeout=timeout, force=True
    )[spec.name]


def ensure_files(
    source: DataSource,
    folder: Path,
    files: Iterable[DataFile],
    *,
    mirrors: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
    verify: bool = True,
    force: bool = False,
) -> dict[str, Path]:
    """Make sure every file in ``files`` is in ``folder``; download those missing or invalid.

    A present file is checked (``verify``) and kept if valid, so it is never downloaded
    again (``force`` downloads anyway); an invalid one is replaced only once a verified
    download is complete. Returns ``{published name: path on disk}``. If files cannot be
    fetched from any mirror, one :class:`DownloadError` names all of them and every reason.
    """
    mirrors = list(source.mirrors if mirrors is None else mirrors)
    if not mirrors:
        raise ParameterError("no download mirrors given")
    found: dict[str, Path] = {}
    failed: list[DataFile] = []
    reasons: list[str] = []
    unreachable: set[str] = set()
    for spec in files:
        path = None if force else find_data_file(folder, spec.name)
        if path is not None and (not verify or check_file(path, spec) is None):
            found[spec.name] = path
            continue
        _prepare_folder(folder)
        result = _try_mirrors(folder, spec, mirrors, progress, timeout, unreachable)
        if isinstance(result, Path):
            found[spec.name] = result
        else:
            failed.append(spec)
            reasons.append(f"could not download {spec.name} ({'; '.join(result)})")
    if failed:
        raise DownloadError("; ".join(reasons) + "; " + _needed_message(source, folder, failed))
    return found


def download_dataset(
    kind: str = "mnist",
    data: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    mirrors: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a data set (both splits unless ``split`` is given) into its folder of the
    data directory; files already present and valid are kept. Returns the folder."""
    source = get_source(kind)
    if split is not None and split not in source.splits:
        raise ParameterError(f"unknown split {split!r} for {kind} (known: train, test)")
    folder = resolve_data_dir(data) / source.folder
    ensure_files(
        source, folder, source.files(split), mirrors=mirrors, progress=progress, timeout=timeout
    )
    return folder
