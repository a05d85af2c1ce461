"""The cheap statistics the trainer logs every epoch: FVE, coherence, dead and dense units.

:mod:`sparsekit.evaluation.measures` documents every measure and re-exports these; they live
here, below evaluation, because training computes them while it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import array_module
from sparsekit.errors import ParameterError

#: Atoms per block of the Gram matrix: the full H×H Gram up to this many, blocks beyond.
COHERENCE_CHUNK = 4000
#: And at most this many bytes a block (float64): at H = 16,384 a block of 4,000 rows was
#: 500 MB, twice over with its absolute value, the largest allocation of a training epoch.
COHERENCE_BLOCK_BYTES = 64 << 20
#: A unit is *dense* when it is active on more than this fraction of the samples.
DENSE_FRACTION = 0.1

def _xp_of(array: Any) -> Any:
    """The array module of ``array`` (CuPy for device arrays, else NumPy)."""
    return array_module(array)


def fraction_variance_explained(x: Any, xhat: Any) -> float:
    """``1 − ‖X − X̂‖² / ‖X − x̄‖²`` (x̄ the per-feature mean of ``x``).

    1 for a perfect reconstruction, 0 for reconstructing every sample as the mean. When the
    data has no variance at all, 1.0 if the reconstruction is exact and ``-inf`` otherwise.
    """
    x = np.asarray(x, dtype=np.float64)
    xhat = np.asarray(xhat, dtype=np.float64)
    if x.shape != xhat.shape:
        raise ParameterError(f"data {x.shape} and reconstruction {xhat.shape} differ in shape")
    x2 = x.reshape(len(x), -1)
    sse = float(np.sum((x2 - xhat.reshape(len(x), -1)) ** 2))
    sst = float(np.sum((x2 - x2.mean(axis=0)) ** 2))
    return fve_from_sums(sse, sst)


def fve_from_sums(sse: float, sst: float) -> float:
    """``1 − sse/sst``; 1.0 for ``sst == 0`` with an exact fit, else ``-inf`` there."""
    if sst > 0:
        return 1.0 - sse / sst
    return 1.0 if sse == 0 else float("-inf")


class VarianceAccumulator:
    """``SST = Σ_i ‖x_i − x̄‖²`` over batches, without a second pass over the data.

    Merges per-feature means and sums of squared deviations batch by batch (Chan et al.'s
    pairwise update) in float64, so the result does not suffer the cancellation of
    ``Σx² − N x̄²``. Works on NumPy or CuPy batches; the state stays on the batch's device.
    ``xp`` is the batches' array namespace (``backend.xp``; default: found from the batch).
    """

    def __init__(self, xp: Any = None) -> None:
        self.xp = xp
        self.n = 0
        self.mean: Any = None
        self.m2: Any = None

    def add(self, x: Any) -> None:
        xp = self.xp if self.xp is not None else _xp_of(x)
        b = int(x.shape[0])
        if b == 0:
            return
        x = x.reshape(b, -1)
        batch_mean = x.mean(axis=0, dtype=xp.float64)
        dev = x - batch_mean.astype(x.dtype)
        batch_m2 = xp.einsum("ij,ij->j", dev, dev).astype(xp.float64)
        if self.n == 0:
            self.n, self.mean, self.m2 = b, batch_mean, batch_m2
            return
        total = self.n + b
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (b / total)
        self.m2 = self.m2 + batch_m2 + delta * delta * (self.n * b / total)
        self.n = total

    @property
    def sst(self) -> float:
        """The total sum of squares around the mean of everything added so far."""
        return 0.0 if self.m2 is None else float(self.m2.sum())


def coherence(atoms: Any, *, chunk: int = COHERENCE_CHUNK, xp: Any = None) -> float:
    """Mutual coherence ``max_{i≠j} |⟨d_i, d_j⟩|`` of the rows of ``atoms`` (H×D), each
    normalised to unit length.

    NumPy or CuPy input (computed on its device; ``xp`` is its array namespace,
    ``backend.xp``, found from the array by default). Zero rows are left at zero (they are
    coherent with nothing). Up to ``chunk`` atoms the H×H Gram matrix is formed at once;
    beyond, it is formed ``chunk`` rows at a time, and never more than
    :data:`COHERENCE_BLOCK_BYTES` at once. A single atom has coherence 0.
    """
    if xp is None:
        xp = _xp_of(atoms)
    a = atoms.astype(xp.float64) if atoms.dtype != xp.float64 else atoms
    if a.ndim != 2:
        raise ParameterError(f"atoms must be a 2-D (units x dim) array, got shape {a.shape}")
    h = a.shape[0]
    if h < 2:
        return 0.0
    norms = xp.sqrt(xp.einsum("ij,ij->i", a, a))
    a = a / xp.where(norms > 0, norms, 1.0)[:, None]
    best = 0.0
    step = max(1, min(int(chunk), COHERENCE_BLOCK_BYTES // (8 * h)))
    for start in range(0, h, step):
        block = a[start : start + step] @ a.T
        xp.abs(block, out=block)
        rows = xp.arange(block.shape[0])
        block[rows, rows + start] = 0.0
        best = max(best, float(block.max()))
    return best


def dead_units(active_counts: Any) -> int:
    """Units whose activation count over a data set is zero."""
    return int((np.asarray(active_counts) == 0).sum())


def dense_units(active_counts: Any, n: int, *, fraction: float = DENSE_FRACTION) -> int:
    """Units active on more than ``fraction`` of the ``n`` samples (default 10%)."""
    return int((np.asarray(active_counts) > fraction * n).sum())
