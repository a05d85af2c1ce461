"""A .npy larger than the memory budget trains minibatch by minibatch, never loaded whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

ROWS, DIM = 120_000, 784  # 376 MB of float32


def test_training_on_a_large_npy_keeps_peak_memory_far_below_its_size(tmp_path):
    path = tmp_path / "big.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(ROWS, DIM))
    rng = np.random.default_rng(0)
    for start in range(0, ROWS, 10_000):  # written in chunks: the test itself stays small too
        array[start : start + 10_000] = rng.random((10_000, DIM), dtype=np.float32)
    array.flush()
    del array
    size_mb = path.stat().st_size / 2**20

    script = textwrap.dedent(
        f"""
        import numpy as np
        import sparsekit
        from sparsekit.data import load_dataset

        def peak_mb():  # VmHWM: ru_maxrss would carry the forking parent's peak across exec
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024

        data = load_dataset({str(path)!r})
        assert len(data) == {ROWS}
        # A first small run loads what every run loads (the compiled loops among them), so
        # that what follows measures the data alone.
        sparsekit.train("ksparse", np.random.default_rng(0).random((600, {DIM}), dtype=np.float32),
                        hidden=32, k=4, epochs=1, batch_size=512)
        base = peak_mb()
        model = sparsekit.train("ksparse", data, hidden=32, k=4, epochs=1, batch_size=512)
        peak = peak_mb()
        print(base, peak)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    base_mb, peak_mb = map(float, out.stdout.split())
    assert size_mb > 350
    print(f"base {base_mb:.0f} MB, peak {peak_mb:.0f} MB, file {size_mb:.0f} MB")
    assert peak_mb - base_mb < 60, (base_mb, peak_mb)
    assert peak_mb < 0.8 * size_mb, f"peak RSS {peak_mb:.0f} MB for a {size_mb:.0f} MB file"
