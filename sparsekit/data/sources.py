"""The downloadable data sets: file names, expected shapes, checksums and mirrors.

MNIST checksums are SHA-256 of the *uncompressed* IDX bytes (the gzip wrapper differs between
mirrors and re-compressed copies; the content does not). For Fashion-MNIST the only checksums
its authors publish are MD5 digests of the ``.gz`` files as distributed
(zalandoresearch/fashion-mnist README); we have not verified a SHA-256 of the uncompressed
content, so Fashion-MNIST downloads are checked against those MD5s of the compressed bytes,
and an already-present uncompressed Fashion-MNIST file can only be checked for its IDX
structure and shape.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFile:
    """One file of a data set, as published (``name`` ends in ``.gz``)."""

    name: str
    shape: tuple[int, ...]
    #: SHA-256 of the uncompressed content, when known.
    sha256: str | None = None
    #: MD5 of the published gzip file, when that is all that is published.
    md5_gz: str | None = None


@dataclass(frozen=True)
class DataSource:
    """A data set of IDX files: where it lives under the data dir and where to fetch it."""

    kind: str
    title: str
    folder: str
    mirrors: tuple[str, ...]
    splits: dict[str, tuple[DataFile, DataFile]]  # split -> (images, labels)

    def files(self, split: str | None = None) -> list[DataFile]:
        splits = [split] if split is not None else list(self.splits)
        return [f for s in splits for f in self.splits[s]]


MNIST = DataSource(
    kind="mnist",
    title="MNIST",
    folder="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    splits={
        "train": (
            DataFile(
                "train-images-idx3-ubyte.gz",
                (60000, 28, 28),
                sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            DataFile(
                "train-labels-idx1-ubyte.gz",
                (60000,),
                sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
        ),
        "test": (
            DataFile(
                "t10k-images-idx3-ubyte.gz",
                (10000, 28, 28),
                sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            DataFile(
                "t10k-labels-idx1-ubyte.gz",
                (10000,),
                sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ),
    },
)

FASHION_MNIST = DataSource(
    kind="fashion-mnist",
    title="Fashion-MNIST",
    folder="fashion-mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    splits={
        "train": (
            DataFile(
                "train-images-idx3-ubyte.gz",
                (60000, 28, 28),
                md5_gz="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ),
            DataFile(
                "train-labels-idx1-ubyte.gz",
                (60000,),
                md5_gz="25c81989df183df01b3e8a0aad5dffbe",
            ),
        ),
        "test": (
            DataFile(
                "t10k-images-idx3-ubyte.gz",
                (10000, 28, 28),
                md5_gz="bef4ecab320f06d8554ea6380940ec79",
            ),
            DataFile(
                "t10k-labels-idx1-ubyte.gz",
                (10000,),
                md5_gz="bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
    },
)

SOURCES: dict[str, DataSource] = {s.kind: s for s in (MNIST, FASHION_MNIST)}
