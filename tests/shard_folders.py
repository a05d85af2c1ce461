"""Builders of small shard folders for the streaming tests: .npy, safetensors, SAELens Arrow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def rows(n: int, dim: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(dtype)


def npy_folder(folder: Path, sizes=(300, 250, 310, 140), dim: int = 12, dtype=np.float32):
    """Shards of ``sizes`` rows; returns every row in shard order."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [rows(n, dim, seed=i, dtype=dtype) for i, n in enumerate(sizes)]
    for i, part in enumerate(parts):
        np.save(folder / f"shard_{i:03d}.npy", part)
    return np.concatenate(parts)


def safetensors_folder(folder: Path, sizes=(200, 180), dim: int = 12, dtype=np.float32):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    parts = [rows(n, dim, seed=10 + i, dtype=dtype) for i, n in enumerate(sizes)]
    for i, part in enumerate(parts):
        save_file(
            {"acts": part, "tokens": np.arange(len(part), dtype=np.int64)},
            str(folder / f"part-{i}.safetensors"),
        )
    return np.concatenate(parts)


def saelens_cache(folder: Path, contexts=(6, 5), context: int = 16, dim: int = 12,
                  hook: str = "blocks.0.hook_resid_pre"):
    """A folder laid out as SAELens' CacheActivationsRunner leaves it (Hugging Face
    ``datasets`` ``save_to_disk``): ``data-0000i-of-0000n.arrow`` IPC stream files holding a
    column named after the hook of ``context × d_in`` lists (``Array2D``), with
    ``dataset_info.json`` and ``state.json`` beside them. Returns the rows, one per token."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    kind = pa.list_(pa.list_(pa.float32()))
    out, files = [], []
    for i, n in enumerate(contexts):
        acts = rows(n * context, dim, seed=20 + i).reshape(n, context, dim)
        out.append(acts.reshape(-1, dim))
        table = pa.table({
            hook: pa.array([[list(map(float, t)) for t in ctx] for ctx in acts], type=kind),
            "token_ids": pa.array([list(range(context))] * n, type=pa.list_(pa.int32())),
        })
        name = f"data-{i:05d}-of-{len(contexts):05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table, max_chunksize=3)
        files.append({"filename": name})
    features = {hook: {"shape": [context, dim], "dtype": "float32", "_type": "Array2D"}}
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    (folder / "state.json").write_text(json.dumps({"_data_files": files, "_split": None}))
    return np.concatenate(out)
