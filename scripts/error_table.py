"""Run every error case of ``docs/errors.md`` for real and rewrite the table from the results.

    python scripts/error_table.py            # run the cases, rewrite docs/errors.md
    python scripts/error_table.py --check    # run the cases, exit 1 if the doc is stale
    python scripts/error_table.py --list     # print the cases, run nothing

The exit-code table at the top of ``docs/errors.md`` is written from
:data:`sparsekit.errors.EXIT_CODES`, the one table of exit codes the command line uses.

Each case is a ``sparsekit`` command run in a fresh working folder that holds small, broken
input files (made by :func:`make_fixtures`). A case passes when the command exits with the
expected code, prints exactly one ``sparsekit: error:`` line on stderr that contains the
expected text, and shows no traceback. The script fails (exit 1) if any case does not, so
the table in the docs is only ever written from commands that behave as it says.

``tests/test_errors.py`` imports this file and runs the same cases under pytest.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparsekit.errors import (
    EXIT_CHECKPOINT,
    EXIT_CODES,
    EXIT_DATA,
    EXIT_DIVERGENCE,
    EXIT_OUTPUT,
    EXIT_PARAMETER,
    EXIT_PLUGIN,
    exit_code_table,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
BEGIN = "<!-- BEGIN error_table.py -->"
END = "<!-- END error_table.py -->"
#: The exit-code table, written from :data:`sparsekit.errors.EXIT_CODES`.
EXIT_BEGIN = "<!-- BEGIN exit codes: sparsekit.errors.EXIT_CODES -->"
EXIT_END = "<!-- END exit codes -->"
ERROR_PREFIX = "sparsekit: error: "

#: Small, valid training settings on the 8x8 fixture ``good.npy`` (200 samples, 64 features).
SMALL = ("--dataset", "good.npy", "--hidden", "16", "--epochs", "1")
SMALL_K = ("--dataset", "good.npy", "--hidden", "32", "--epochs", "1")


@dataclass(frozen=True)
class Case:
    """One thing a user can get wrong, the command that does it, and what must happen."""

    id: str
    what: str
    args: tuple[str, ...]
    exit_code: int
    expect: str
    #: ``cli`` runs ``sparsekit ARGS``; ``enospc`` makes fsync fail with ENOSPC (a full
    #: disk) inside the process; ``fsize`` sets RLIMIT_FSIZE to 256 bytes (files grow no
    #: larger: EFBIG).
    runner: str = "cli"
    #: For ``enospc``: (part of a file name, fsyncs of such files that still succeed).
    full_on: tuple[str, int] = ("", 0)
    #: True when the error comes before training starts: then stderr holds nothing else.
    #: Errors during training follow the progress lines ("training ...", "epoch ...").
    before_training: bool = True
    #: A condition the case needs (``non-root``, ``linux``); unmet, the case is not run.
    needs: str | None = None
    #: Extra setup in the working folder before the command runs.
    setup: Callable[[Path], None] | None = field(default=None, compare=False)

    def command(self) -> str:
        """The command as a user would type it (with the simulation named, if any)."""
        text = " ".join(["sparsekit", *(_quote(a) for a in self.args)])
        if self.runner == "enospc":
            name, ok = self.full_on
            if name:
                text += f"  (ENOSPC from the {_ordinal(ok + 1)} fsync of {name} on)"
            else:
                text += "  (every fsync fails with ENOSPC)"
        elif self.runner == "fsize":
            text = "ulimit -f 0.25; " + text  # 256 bytes, in the 1 KiB blocks of ulimit
        return text


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=@+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _train(*args: str, small: Sequence[str] = SMALL) -> tuple[str, ...]:
    return ("train", *args, *small, "--out", "runs")


CASES: tuple[Case, ...] = (
    # -- impossible parameters ---------------------------------------------------------------
    Case(
        "k-zero",
        "k = 0",
        _train("ksparse", "--k", "0", small=SMALL_K),
        EXIT_PARAMETER,
        "ksparse: --k must be between 1",
    ),
    Case(
        "k-above-hidden",
        "k larger than the hidden size",
        _train("ksparse", "--k", "50", small=SMALL_K),
        EXIT_PARAMETER,
        "ksparse: --k must be between 1 and the hidden size (32), got 50",
    ),
    Case(
        "rho-zero",
        "ρ = 0",
        _train("kl", "--rho", "0"),
        EXIT_PARAMETER,
        "kl: --rho must be strictly between 0 and 1",
    ),
    Case(
        "rho-above-one",
        "ρ ≥ 1",
        _train("kl", "--rho", "1.5"),
        EXIT_PARAMETER,
        "kl: --rho must be strictly between 0 and 1",
    ),
    Case(
        "lr-zero",
        "learning rate = 0",
        _train("plain", "--lr", "0"),
        EXIT_PARAMETER,
        "--lr must be a finite number > 0",
    ),
    Case(
        "lr-negative",
        "learning rate < 0",
        _train("plain", "--lr", "-1"),
        EXIT_PARAMETER,
        "--lr must be a finite number > 0",
    ),
    Case(
        "lr-nan",
        "learning rate NaN",
        _train("plain", "--lr", "nan"),
        EXIT_PARAMETER,
        "--lr must be a finite number > 0",
    ),
    Case(
        "batch-zero",
        "batch size = 0",
        _train("plain", "--batch-size", "0"),
        EXIT_PARAMETER,
        "--batch-size must be a positive integer",
    ),
    Case(
        "batch-negative",
        "batch size < 0",
        _train("plain", "--batch-size", "-3"),
        EXIT_PARAMETER,
        "--batch-size must be a positive integer",
    ),
    Case(
        "hidden-zero",
        "hidden size = 0",
        ("train", "plain", "--dataset", "good.npy", "--hidden", "0", "--out", "runs"),
        EXIT_PARAMETER,
        "--hidden must be a positive integer",
    ),
    Case(
        "epochs-zero",
        "epochs = 0",
        ("train", "plain", "--dataset", "good.npy", "--epochs", "0", "--out", "runs"),
        EXIT_PARAMETER,
        "--epochs must be a positive integer",
    ),
    Case(
        "subset-zero",
        "subset = 0",
        _train("plain", "--subset", "0"),
        EXIT_PARAMETER,
        "--subset must be a positive integer",
    ),
    Case(
        "subset-too-large",
        "subset larger than the data",
        _train("plain", "--subset", "5000"),
        EXIT_PARAMETER,
        "subset=5000 is larger than the",
    ),
    Case(
        "momentum-one",
        "momentum ≥ 1",
        _train("plain", "--momentum", "1"),
        EXIT_PARAMETER,
        "--momentum must be a number in [0, 1)",
    ),
    Case(
        "seed-negative",
        "negative seed",
        _train("plain", "--seed", "-1"),
        EXIT_PARAMETER,
        "--seed must be an integer >= 0",
    ),
    Case(
        "optimizer-unknown",
        "unknown optimizer",
        _train("plain", "--optimizer", "rmsprop"),
        EXIT_PARAMETER,
        "--optimizer must be one of sgd, momentum, adam, got 'rmsprop'",
    ),
    Case(
        "dtype-unknown",
        "unsupported dtype",
        _train("plain", "--dtype", "float16"),
        EXIT_PARAMETER,
        "float16",
    ),
    Case(
        "param-not-a-number",
        "method parameter of the wrong type",
        _train("ksparse", "--k", "many", small=SMALL_K),
        EXIT_PARAMETER,
        "--k: expected int, got 'many'",
    ),
    Case(
        "param-unknown",
        "option the method does not have",
        _train("plain", "--k", "5"),
        EXIT_PARAMETER,
        "unknown option --k for method 'plain'",
    ),
    Case(
        "option-misspelt",
        "misspelt training option",
        _train("ksparse", "--epoch", "2", small=SMALL_K),
        EXIT_PARAMETER,
        "unknown option --epoch for method 'ksparse' (did you mean --epochs?",
    ),
    Case(
        "param-not-a-bool",
        "method switch that is neither true nor false",
        _train("jumprelu", "--pre-bias", "maybe"),
        EXIT_PARAMETER,
        "--pre-bias: expected true or false, got 'maybe'",
    ),
    Case(
        "resample-without-dead",
        "resampling without dead-unit tracking",
        _train("topk", "--k", "4", "--resample-every", "3", "--dead-after", "0"),
        EXIT_PARAMETER,
        "topk: --resample-every needs --dead-after > 0",
    ),
    Case(
        "compare-param-impossible",
        "impossible method parameter in a comparison",
        ("compare", "ksparse", "--param", "ksparse.k=0", *SMALL_K, "--out", "runs"),
        EXIT_PARAMETER,
        "ksparse: --k must be between 1 and the hidden size (32), got 0",
    ),
    Case(
        "untied-not-allowed",
        "untied weights for a method that needs tied ones",
        _train("arora", "--untied"),
        EXIT_PARAMETER,
        "method 'arora' needs tied weights",
    ),
    Case(
        "method-unknown",
        "unknown method",
        _train("nosuch"),
        EXIT_PLUGIN,
        "unknown method 'nosuch' (available:",
    ),
    Case(
        "option-not-a-number",
        "training option of the wrong type",
        ("train", "plain", "--dataset", "good.npy", "--epochs", "many", "--out", "runs"),
        EXIT_PARAMETER,
        "Invalid value for '--epochs'",
    ),
    Case(
        "command-unknown",
        "unknown command",
        ("trian", "plain"),
        EXIT_PARAMETER,
        "No such command 'trian'",
    ),
    # -- bad data ------------------------------------------------------------------------------
    Case(
        "data-missing",
        "data file does not exist",
        _train("plain", small=()) + ("--dataset", "nothere.npy"),
        EXIT_DATA,
        "nothere.npy: no such file",
    ),
    Case(
        "data-folder",
        "data folder without shards",
        _train("plain", small=()) + ("--dataset", "runs-file-dir"),
        EXIT_DATA,
        "runs-file-dir: no shards",
    ),
    Case(
        "shard-width",
        "shard folder: a shard of another width",
        _train("plain", small=()) + ("--dataset", "shards-width"),
        EXIT_DATA,
        "b.npy: rows of 7 features, but a.npy has 64",
    ),
    Case(
        "shard-dtype",
        "shard folder: a shard of another dtype",
        _train("plain", small=()) + ("--dataset", "shards-dtype"),
        EXIT_DATA,
        "b.npy: dtype float16, but a.npy is float32",
    ),
    Case(
        "shard-truncated",
        "shard folder: a truncated shard",
        _train("plain", small=()) + ("--dataset", "shards-truncated"),
        EXIT_DATA,
        "b.npy: truncated",
    ),
    Case(
        "shard-nan",
        "shard folder: NaN in a shard",
        _train("plain", small=()) + ("--dataset", "shards-nan", "--test-fraction", "0"),
        EXIT_DATA,
        "b.npy: row 4 contains NaN or infinite values",
    ),
    Case(
        "arrow-corrupt",
        "SAELens cache: a corrupt Arrow file",
        _train("plain", small=()) + ("--dataset", "cache-corrupt"),
        EXIT_DATA,
        "data-00000-of-00001.arrow: not a readable Arrow file",
    ),
    Case(
        "stream-memory-small",
        "--stream-memory below one segment",
        _train("plain", small=()) + ("--dataset", "shards-big", "--stream-memory", "1"),
        EXIT_PARAMETER,
        "--stream-memory 1 MiB is too small",
    ),
    Case(
        "data-unknown-type",
        "data file of an unknown type",
        _train("plain", small=()) + ("--dataset", "data.txt"),
        EXIT_DATA,
        "data.txt: unsupported file type",
    ),
    Case(
        "npy-not-npy",
        ".npy file that is not NumPy data",
        _train("plain", small=()) + ("--dataset", "notnpy.npy"),
        EXIT_DATA,
        "notnpy.npy: not a valid .npy array",
    ),
    Case(
        "npy-truncated",
        "truncated .npy file",
        _train("plain", small=()) + ("--dataset", "truncated.npy"),
        EXIT_DATA,
        "truncated.npy: cannot read the array",
    ),
    Case(
        "npy-nan",
        "NaN in a .npy file",
        _train("plain", small=()) + ("--dataset", "nan.npy"),
        EXIT_DATA,
        "nan.npy: row 7 contains NaN or infinite values",
    ),
    Case(
        "npy-inf",
        "infinity in a .npy file",
        _train("plain", small=()) + ("--dataset", "inf.npy"),
        EXIT_DATA,
        "inf.npy: row 3 contains NaN or infinite values",
    ),
    Case(
        "npz-nan-compressed",
        "NaN in a compressed .npz (read into memory)",
        _train("plain", small=()) + ("--dataset", "nan.npz"),
        EXIT_DATA,
        "nan.npz:x: row 5 contains NaN or infinite values",
    ),
    Case(
        "npy-object",
        ".npy holding pickled Python objects",
        _train("plain", small=()) + ("--dataset", "objects.npy"),
        EXIT_DATA,
        "objects.npy: the array holds Python objects",
    ),
    Case(
        "npz-object",
        ".npz holding pickled Python objects",
        _train("plain", small=()) + ("--dataset", "objects.npz"),
        EXIT_DATA,
        "objects.npz:x: the array holds Python objects",
    ),
    Case(
        "npy-strings",
        "array of strings",
        _train("plain", small=()) + ("--dataset", "strings.npy"),
        EXIT_DATA,
        "strings.npy: expected a numeric array",
    ),
    Case(
        "npy-complex",
        "array of complex numbers",
        _train("plain", small=()) + ("--dataset", "complex.npy"),
        EXIT_DATA,
        "complex.npy: expected a numeric array, got dtype complex128",
    ),
    Case(
        "npy-1d",
        "1-D array",
        _train("plain", small=()) + ("--dataset", "vector.npy"),
        EXIT_DATA,
        "vector.npy: expected an array of shape (samples, features)",
    ),
    Case(
        "npy-4d",
        "4-D array",
        _train("plain", small=()) + ("--dataset", "cube4d.npy"),
        EXIT_DATA,
        "got shape (4, 3, 2, 2)",
    ),
    Case(
        "npy-empty",
        "empty array",
        _train("plain", small=()) + ("--dataset", "empty.npy"),
        EXIT_DATA,
        "empty.npy: the array is empty",
    ),
    Case(
        "npz-not-zip",
        ".npz that is not a zip file",
        _train("plain", small=()) + ("--dataset", "notzip.npz"),
        EXIT_DATA,
        "notzip.npz: not a valid .npz file",
    ),
    Case(
        "npz-no-key",
        ".npz without the named array",
        _train("plain", small=()) + ("--dataset", "nan.npz:pixels"),
        EXIT_DATA,
        "no array named 'pixels'",
    ),
    Case(
        "idx-truncated",
        "truncated IDX file",
        _train("plain", small=()) + ("--dataset", "truncated.idx"),
        EXIT_DATA,
        "truncated.idx",
    ),
    Case(
        "mnist-missing",
        "MNIST files not in the data folder",
        ("train", "plain", "--data", "nodata", "--no-download", "--out", "runs"),
        EXIT_DATA,
        "not found in nodata/mnist",
    ),
    Case(
        "mnist-garbage",
        "MNIST file that is not IDX",
        ("train", "plain", "--data", "garbage", "--no-download", "--out", "runs"),
        EXIT_DATA,
        "garbage/mnist/train-images-idx3-ubyte.gz",
    ),
    Case(
        "mnist-truncated",
        "truncated (half-downloaded) MNIST file",
        ("train", "plain", "--data", "truncated", "--no-download", "--out", "runs"),
        EXIT_DATA,
        "truncated/mnist/train-images-idx3-ubyte.gz: corrupt gzip data",
    ),
    Case(
        "mnist-wrong-content",
        "well-formed IDX file that is not the published MNIST file",
        ("train", "plain", "--data", "impostor", "--no-download", "--out", "runs"),
        EXIT_DATA,
        "not the published MNIST file",
    ),
    # -- output ---------------------------------------------------------------------------------
    Case(
        "out-is-file",
        "--out is a file",
        ("train", "plain", *SMALL, "--out", "data.txt"),
        EXIT_OUTPUT,
        "cannot create a run directory in data.txt",
    ),
    Case(
        "out-under-file",
        "--out below a file",
        ("train", "plain", *SMALL, "--out", "data.txt/runs"),
        EXIT_OUTPUT,
        "cannot create a run directory in data.txt/runs: Not a directory",
    ),
    Case(
        "out-read-only",
        "--out in a read-only folder",
        ("train", "plain", *SMALL, "--out", "readonly/runs"),
        EXIT_OUTPUT,
        "cannot create a run directory in readonly/runs: Permission denied",
        needs="non-root",
    ),
    Case(
        "out-kernel-fs",
        "--out where nobody may create folders",
        ("train", "plain", *SMALL, "--out", "/sys/sparsekit-runs"),
        EXIT_OUTPUT,
        "cannot create a run directory in /sys/sparsekit-runs",
        needs="linux",
    ),
    Case(
        "disk-full",
        "disk full while writing the run",
        ("train", "plain", *SMALL, "--out", "runs"),
        EXIT_OUTPUT,
        "config.json: No space left on device",
        runner="enospc",
        before_training=False,
    ),
    Case(
        "disk-full-checkpoint",
        "disk full while writing the checkpoint of epoch 2 (epoch 1's is kept)",
        ("train", "ksparse", *SMALL_K[:-1], "3", "--out", "runs-full-ckpt"),
        EXIT_CHECKPOINT,
        "checkpoint.npz: No space left on device",
        runner="enospc",
        full_on=("checkpoint", 2),
        before_training=False,
        needs="linux",
    ),
    Case(
        "file-too-large",
        "file size limit reached while writing the run",
        ("train", "plain", *SMALL, "--out", "runs"),
        EXIT_OUTPUT,
        "File too large",
        runner="fsize",
        before_training=False,
        needs="linux",
    ),
    # -- checkpoints and --resume ---------------------------------------------------------------
    Case(
        "resume-missing",
        "--resume of a folder that does not exist",
        ("train", "--resume", "nothere"),
        EXIT_CHECKPOINT,
        "nothere: no such run directory",
    ),
    Case(
        "resume-not-a-run",
        "--resume of a folder that is not a run",
        ("train", "--resume", "empty-folder"),
        EXIT_CHECKPOINT,
        "empty-folder: not a run directory (no config.json)",
    ),
    Case(
        "resume-no-checkpoint",
        "--resume of a run without checkpoint.npz",
        ("train", "--resume", "run-no-checkpoint"),
        EXIT_CHECKPOINT,
        "no checkpoint.npz in this run directory",
    ),
    Case(
        "checkpoint-truncated",
        "truncated checkpoint.npz",
        ("train", "--resume", "run-truncated"),
        EXIT_CHECKPOINT,
        "run-truncated/checkpoint.npz: not a valid checkpoint",
    ),
    Case(
        "checkpoint-pickle",
        "checkpoint.npz with a pickled object member",
        ("train", "--resume", "run-pickle"),
        EXIT_CHECKPOINT,
        "refused: member 'params/W_enc' is a pickled object array",
    ),
    Case(
        "checkpoint-nan",
        "checkpoint.npz with NaN weights",
        ("train", "--resume", "run-nan"),
        EXIT_CHECKPOINT,
        "array 'params/W_enc' holds NaN or infinite values",
    ),
    Case(
        "checkpoint-other-method",
        "checkpoint.npz copied from a run of another method",
        ("train", "--resume", "run-l2-with-ksparse-checkpoint"),
        EXIT_CHECKPOINT,
        "a checkpoint of method 'ksparse', but run-l2-with-ksparse-checkpoint is a run of 'l2'",
    ),
    Case(
        "resume-with-method",
        "--resume together with a method name",
        ("train", "l2", "--resume", "run-ksparse"),
        EXIT_PARAMETER,
        "--resume continues a run with its own method and settings",
    ),
    Case(
        "show-truncated",
        "`show` of a run with a truncated checkpoint",
        ("show", "run-truncated"),
        EXIT_CHECKPOINT,
        "run-truncated/checkpoint.npz: not a valid checkpoint",
    ),
    Case(
        "export-pickle",
        "`export` of a run whose checkpoint holds a pickle",
        ("export", "run-pickle"),
        EXIT_CHECKPOINT,
        "refused: member 'params/W_enc' is a pickled object array",
    ),
    Case(
        "encode-wrong-size",
        "`encode` of data with another number of features",
        ("encode", "run-ksparse", "wide.npy", "codes.npy"),
        EXIT_DATA,
        "wide.npy: samples have 100 features, the model of run-ksparse expects 64",
    ),
    Case(
        "encode-nan",
        "`encode` of data holding NaN",
        ("encode", "run-ksparse", "nan64.npy", "codes.npy"),
        EXIT_DATA,
        "nan64.npy: row 7 contains NaN or infinite values",
    ),
    # -- training --------------------------------------------------------------------------------
    Case(
        "diverges",
        "training diverges (loss becomes NaN/inf)",
        _train("ksparse", "--lr", "1e12", "--optimizer", "sgd", small=SMALL_K),
        EXIT_DIVERGENCE,
        "training diverged at epoch 1, step",
        before_training=False,
    ),
    # -- data-parallel training (docs/distributed.md) --------------------------------------------
    Case(
        "distributed-resample",
        "`--distributed` with resampling of dead units",
        _train("topk", "--distributed", "--k", "4", "--dead-after", "10", "--resample-every", "5"),
        EXIT_PARAMETER,
        "topk cannot train with --distributed while resampling dead units",
    ),
    Case(
        "check-replicas-alone",
        "`--check-replicas` without `--distributed`",
        _train("plain", "--check-replicas"),
        EXIT_PARAMETER,
        "--check-replicas compares the ranks of --distributed: add it",
    ),
    Case(
        "shard-latents-alone",
        "`--shard-latents` without `--distributed`",
        _train("topk", "--shard-latents"),
        EXIT_PARAMETER,
        "--shard-latents shards the latents over the ranks of --distributed: add it",
    ),
    Case(
        "shard-latents-method",
        "`--distributed --shard-latents` for a method sharding does not compute",
        _train("kl", "--distributed", "--shard-latents"),
        EXIT_PARAMETER,
        "kl cannot train with its latents sharded: only ksparse, topk can",
    ),
)


# -- fixtures ------------------------------------------------------------------------------------


def make_fixtures(folder: Path) -> None:
    """Write the (mostly broken) input files the cases use into ``folder``."""
    from sparsekit.data import write_idx

    rng = np.random.default_rng(0)
    good = rng.random((200, 8, 8)).astype(np.float32)
    np.save(folder / "good.npy", good)
    nan = good.reshape(200, -1).copy()
    nan[7, 3] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "nan64.npy", nan[:20])
    np.save(folder / "wide.npy", np.zeros((10, 100), dtype=np.float32))
    inf = good.reshape(200, -1).copy()
    inf[3, 0] = np.inf
    np.save(folder / "inf.npy", inf)
    nan_z = good.reshape(200, -1).copy()
    nan_z[5, 1] = np.nan
    np.savez_compressed(folder / "nan.npz", x=nan_z)
    objects = np.empty((4, 2), dtype=object)
    np.save(folder / "objects.npy", objects, allow_pickle=True)
    np.savez(folder / "objects.npz", x=objects)
    np.save(folder / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(folder / "complex.npy", np.zeros((4, 4), dtype=complex))
    np.save(folder / "vector.npy", np.arange(10.0))
    np.save(folder / "cube4d.npy", np.zeros((4, 3, 2, 2)))
    np.save(folder / "empty.npy", np.zeros((0, 5), dtype=np.float32))
    whole = (folder / "good.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    (folder / "notnpy.npy").write_bytes(b"these are not the bytes of a NumPy file\n")
    (folder / "notzip.npz").write_bytes(b"PK\x03\x04 but not really a zip file")
    (folder / "data.txt").write_text("1,2,3\n")
    (folder / "runs-file-dir").mkdir()
    shards = good.reshape(200, -1)
    for name in ("width", "dtype", "truncated", "nan"):
        (folder / f"shards-{name}").mkdir()
        np.save(folder / f"shards-{name}" / "a.npy", shards)
    np.save(folder / "shards-width" / "b.npy", shards[:, :7])
    np.save(folder / "shards-dtype" / "b.npy", shards.astype(np.float16))
    np.save(folder / "shards-truncated" / "b.npy", shards)
    cut = folder / "shards-truncated" / "b.npy"
    cut.write_bytes(cut.read_bytes()[:-1000])
    nan_rows = shards.copy()
    nan_rows[4, 2] = np.nan
    np.save(folder / "shards-nan" / "b.npy", nan_rows)
    (folder / "shards-big").mkdir()
    np.save(folder / "shards-big" / "a.npy", np.zeros((40_000, 64), np.float32))
    (folder / "cache-corrupt").mkdir()
    (folder / "cache-corrupt" / "data-00000-of-00001.arrow").write_bytes(b"\xff\xff\xff\xff" * 9)
    write_idx(folder / "full.idx", (good * 255).astype(np.uint8))
    whole = (folder / "full.idx").read_bytes()
    (folder / "truncated.idx").write_bytes(whole[: len(whole) // 3])
    (folder / "full.idx").unlink()
    (folder / "nodata" / "mnist").mkdir(parents=True)
    labels = (np.arange(300) % 10).astype(np.uint8)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    for name in ("garbage", "truncated", "impostor"):
        mnist = folder / name / "mnist"
        mnist.mkdir(parents=True)
        write_idx(mnist / "train-labels-idx1-ubyte.gz", labels)
        write_idx(mnist / "train-images-idx3-ubyte.gz", images)
    (folder / "garbage" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"<html>404</html>")
    cut = folder / "truncated" / "mnist" / "train-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:5000])
    make_runs(folder)
    readonly = folder / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)


def _train_run(folder: Path, method: str, name: str) -> Path:
    """A finished one-epoch run of ``method`` on good.npy, as ``folder/name``."""
    out = folder / f"_runs-{name}"
    subprocess.run(
        [*sparsekit_command(), "train", method, *SMALL_K, "--out", str(out)],
        cwd=folder,
        env=_env(folder),
        check=True,
        capture_output=True,
        timeout=120,
    )
    (run,) = out.iterdir()
    run.rename(folder / name)
    out.rmdir()
    return folder / name


def make_runs(folder: Path) -> None:
    """Run directories with broken or foreign checkpoints."""
    ksparse = _train_run(folder, "ksparse", "run-ksparse")
    l2 = _train_run(folder, "l2", "run-l2-with-ksparse-checkpoint")
    shutil.copy(ksparse / "checkpoint.npz", l2 / "checkpoint.npz")
    (folder / "empty-folder").mkdir()
    for name in ("run-no-checkpoint", "run-truncated", "run-pickle", "run-nan"):
        shutil.copytree(ksparse, folder / name)
    (folder / "run-no-checkpoint" / "checkpoint.npz").unlink()
    whole = (ksparse / "checkpoint.npz").read_bytes()
    (folder / "run-truncated" / "checkpoint.npz").write_bytes(whole[: len(whole) // 2])
    with np.load(ksparse / "checkpoint.npz") as archive:
        members = {k: archive[k] for k in archive.files}
    pickled = dict(members)
    pickled["params/W_enc"] = np.array([None, {"not": "numbers"}], dtype=object)
    np.savez(folder / "run-pickle" / "checkpoint.npz", **pickled)  # savez pickles objects
    poisoned = dict(members)
    poisoned["params/W_enc"] = members["params/W_enc"].copy()
    poisoned["params/W_enc"][0, 0] = np.nan
    np.savez(folder / "run-nan" / "checkpoint.npz", **poisoned)


def cleanup_fixtures(folder: Path) -> None:
    readonly = folder / "readonly"
    if readonly.exists():
        readonly.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


# -- running -------------------------------------------------------------------------------------

_ENOSPC_RUNNER = """
import errno, os, sys
_fsync, _count = os.fsync, [0]
_name, _, _ok = os.environ["ERROR_TABLE_FULL_ON"].partition(":")
def _full(fd):
    try:
        path = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        path = ""
    if _name in path:
        _count[0] += 1
        if _count[0] > int(_ok):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)
os.fsync = _full
from sparsekit.cli.main import main
sys.argv[0] = "sparsekit"
main(sys.argv[1:])
"""


@dataclass
class Result:
    case: Case
    returncode: int
    stdout: str
    stderr: str
    skipped: str | None = None

    @property
    def lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith(ERROR_PREFIX)]

    @property
    def message(self) -> str:
        errors = self.error_lines
        return errors[0][len(ERROR_PREFIX) :] if errors else ""

    def problems(self) -> list[str]:
        """What is wrong with this result (empty when the case behaves as documented)."""
        if self.skipped:
            return []
        case, out = self.case, []
        if case.exit_code not in EXIT_CODES:
            out.append(f"exit code {case.exit_code} is not in sparsekit.errors.EXIT_CODES")
        if self.returncode != case.exit_code:
            out.append(f"exit code {self.returncode}, expected {case.exit_code}")
        if "Traceback" in self.stderr or "Traceback" in self.stdout:
            out.append("a traceback was printed")
        if len(self.error_lines) != 1:
            out.append(f"{len(self.error_lines)} 'sparsekit: error:' lines, expected 1")
        if case.before_training and len(self.lines) != 1:
            out.append(f"{len(self.lines)} non-empty stderr lines, expected 1")
        elif case.before_training and self.stderr.splitlines() != self.lines:
            out.append("an empty line on stderr before the error")
        if self.lines and not self.lines[-1].startswith(ERROR_PREFIX):
            out.append("the error is not the last line on stderr")
        if case.expect not in self.message:
            out.append(f"message lacks {case.expect!r}")
        return out


def unmet_need(case: Case) -> str | None:
    if case.needs == "non-root" and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "running as root, which ignores folder permissions"
    if case.needs == "linux" and not sys.platform.startswith("linux"):
        return "needs Linux"
    return None


def sparsekit_command() -> list[str]:
    """How to start the CLI: the ``sparsekit`` script next to this Python, else ``-m``."""
    script = Path(sys.executable).with_name("sparsekit")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sparsekit.cli.main import main; main()"]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SPARSEKIT_DEBUG"}
    env["SPARSEKIT_DATA"] = str(folder / "nodata")  # never the user's cache
    env["COLUMNS"] = "200"
    # tiny matrices: BLAS threads only compete with the other cases for the cores
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_case(case: Case, folder: Path, timeout: float = 60) -> Result:
    """Run ``case`` in ``folder`` (which holds the fixtures)."""
    skipped = unmet_need(case)
    if skipped:
        return Result(case, case.exit_code, "", "", skipped=skipped)
    if case.setup is not None:
        case.setup(folder)
    env = _env(folder)
    preexec = None
    if case.runner == "enospc":
        cmd = [sys.executable, "-c", _ENOSPC_RUNNER, *case.args]
        env["ERROR_TABLE_FULL_ON"] = f"{case.full_on[0]}:{case.full_on[1]}"
    else:
        cmd = [*sparsekit_command(), *case.args]
    if case.runner == "fsize":
        import resource

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))

    proc = subprocess.run(
        cmd,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )
    return Result(case, proc.returncode, proc.stdout, proc.stderr)


def run_all(cases: Sequence[Case] = CASES) -> list[Result]:
    folder = Path(tempfile.mkdtemp(prefix="sparsekit-errors-"))
    try:
        make_fixtures(folder)
        return [run_case(case, folder) for case in cases]
    finally:
        cleanup_fixtures(folder)


# -- the document --------------------------------------------------------------------------------

_STAMP = re.compile(r"\d{8}-\d{6}(-\d+)?")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: Sequence[Result]) -> str:
    rows = [
        "| # | What is wrong | Command | Exit | Message on stderr |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        if r.skipped:
            message = f"*(not run here: {r.skipped})*"
        else:
            message = "`" + _cell(_STAMP.sub("YYYYMMDD-HHMMSS", r.message)) + "`"
        rows.append(
            f"| {i} | {_cell(r.case.what)} | `{_cell(r.case.command())}` | "
            f"{r.case.exit_code} | {message} |"
        )
    return "\n".join(rows)


def _replace_block(text: str, begin: str, end: str, body: str) -> str | None:
    """``text`` with what lies between ``begin`` and ``end`` replaced (None: no markers)."""
    if begin not in text or end not in text:
        return None
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render_doc(results: Sequence[Result], current: str | None) -> str:
    """``current`` with the text between the markers replaced by fresh tables: the cases
    run, and the exit codes of :data:`sparsekit.errors.EXIT_CODES`."""
    cases = f"{BEGIN}\n{table(results)}\n{END}"
    codes = f"{EXIT_BEGIN}\n{exit_code_table()}\n{EXIT_END}"
    if not current:
        return f"# Errors\n\n{codes}\n\n{cases}\n"
    out = _replace_block(current, BEGIN, END, table(results)) or f"{current}\n{cases}\n"
    return _replace_block(out, EXIT_BEGIN, EXIT_END, exit_code_table()) or out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/errors.md is stale")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to rewrite")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES:
            print(f"{case.id:22} exit {case.exit_code}  {case.command()}")
        return 0
    results = run_all()
    failed = False
    for r in results:
        problems = r.problems()
        status = "skip" if r.skipped else ("FAIL" if problems else "ok")
        print(f"{status:4} {r.case.id:22} rc={r.returncode} {r.message or r.skipped or ''}")
        for p in problems:
            failed = True
            print(f"       {p}\n       stderr: {r.stderr.strip()!r}")
    if failed:
        print("some cases do not behave as documented; docs/errors.md left as it is")
        return 1
    current = args.doc.read_text(encoding="utf-8") if args.doc.exists() else None
    new = render_doc(results, current)
    if args.check:
        if new != current:
            print(f"{args.doc} is out of date: run python scripts/error_table.py")
            return 1
        print(f"{args.doc} is up to date")
        return 0
    args.doc.write_text(new, encoding="utf-8")
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
