"""Data: file formats, downloads and the Dataset the trainer reads."""

from sparsekit.data.arrays import ArrayFileDataset, load_array_file, load_idx_file
from sparsekit.data.dataset import ArrayDataset, Dataset
from sparsekit.data.download import (
    ProgressCallback,
    check_file,
    download_dataset,
    ensure_files,
    fetch_file,
)
from sparsekit.data.idx import read_idx, read_idx_header, sha256_uncompressed, write_idx
from sparsekit.data.loaders import ground_truth, load_dataset
from sparsekit.data.mnist import ChecksumError, load_mnist
from sparsekit.data.paths import DATA_ENV, default_data_dir, resolve_data_dir
from sparsekit.data.preprocess import (
    ZCA,
    Preprocessed,
    SubsetDataset,
    preprocess,
    subset,
    train_test_split,
)
from sparsekit.data.recovery import match_dictionaries, recovery_distance, recovery_summary
from sparsekit.data.shards import ShardFolder
from sparsekit.data.sources import SOURCES, DataFile, DataSource
from sparsekit.data.stream import StreamDataset, open_stream
from sparsekit.data.synthetic import SparseCodingProblem, make_sparse_coding, mutual_coherence
from sparsekit.data.synthetic_sae import SyntheticSAEParams, SyntheticSAEWorld, make_synthetic_sae

__all__ = [
    "DATA_ENV",
    "SOURCES",
    "ZCA",
    "ArrayDataset",
    "ArrayFileDataset",
    "ChecksumError",
    "DataFile",
    "DataSource",
    "Dataset",
    "Preprocessed",
    "ProgressCallback",
    "ShardFolder",
    "SparseCodingProblem",
    "StreamDataset",
    "SubsetDataset",
    "SyntheticSAEParams",
    "SyntheticSAEWorld",
    "check_file",
    "default_data_dir",
    "download_dataset",
    "ensure_files",
    "fetch_file",
    "ground_truth",
    "load_array_file",
    "load_dataset",
    "load_idx_file",
    "load_mnist",
    "make_sparse_coding",
    "make_synthetic_sae",
    "match_dictionaries",
    "mutual_coherence",
    "open_stream",
    "preprocess",
    "read_idx",
    "read_idx_header",
    "recovery_distance",
    "recovery_summary",
    "resolve_data_dir",
    "sha256_uncompressed",
    "subset",
    "train_test_split",
    "write_idx",
]
