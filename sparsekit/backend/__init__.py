"""Array backends: NumPy on the CPU, CuPy on a CUDA GPU.

This is the only module that imports CuPy, and only when a GPU backend is asked for, so
``import sparsekit`` works on machines without it. Everything else receives a
:class:`Backend` and uses ``backend.xp`` (the array namespace) and ``backend.sparse``
(``scipy.sparse`` or ``cupyx.scipy.sparse``) without knowing which one it got.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from sparsekit.errors import BackendError, ParameterError
from sparsekit.files import first_line

DTYPES = {"float32": np.float32, "float64": np.float64}
#: How a GPU training step's matrix products round: exact float32, or TF32 tensor cores.
MATMUL_PRECISIONS = ("float32", "tf32")


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the floating-point type all arrays of a run use.

    ``is_gpu`` declares that the arrays live on a device (CuPy, or the simulated device of
    :mod:`sparsekit.backend.simulated`): code then takes its GPU branch (no CPU-only fused
    loops, fewer host synchronisations) and :meth:`to_numpy` copies with ``.get()``.
    """

    name: str
    xp: ModuleType
    sparse: ModuleType | None
    dtype: np.dtype
    is_gpu: bool = False
    #: The training step's matrix products: "float32" (exact) or "tf32" (CuPy only, inside
    #: :meth:`step_scope`; products outside a step, e.g. evaluation, stay exact).
    matmul_precision: str = "float32"

    @contextmanager
    def step_scope(self) -> Iterator[None]:
        """The trainer runs each minibatch's work inside this scope. Nothing happens here on
        NumPy; CuPy switches its float32 products to TF32 for the scope when asked; the
        simulated device refuses host transfers inside it."""
        yield

    def asarray(self, array: Any, dtype: Any = None) -> Any:
        """``array`` on this backend's device, in ``dtype`` (default: the run's dtype)."""
        return self.xp.asarray(array, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, array: Any) -> np.ndarray:
        """A NumPy copy (or view, on the CPU) of a backend array."""
        if self.is_gpu and not isinstance(array, np.ndarray):
            return array.get()
        return np.asarray(array)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); call before reading a clock."""
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()


def resolve_dtype(dtype: Any) -> np.dtype:
    try:
        resolved = np.dtype(DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
    except TypeError as exc:
        raise ParameterError(f"unknown dtype {dtype!r}: use float32 or float64") from exc
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ParameterError(f"unsupported dtype {resolved}: use float32 or float64")
    return resolved


@dataclass(frozen=True)
class CupyBackend(Backend):
    """The CuPy backend: with ``matmul_precision="tf32"`` each training step's float32
    products use the tensor cores' TF32 inputs, set for the step and restored after it (CuPy's
    compute type is process-wide state: a library leaves it as it found it)."""

    @contextmanager
    def step_scope(self) -> Iterator[None]:  # pragma: no cover - needs a GPU
        if self.matmul_precision != "tf32":
            yield
            return
        from cupy._core import _routines_linalg as linalg

        previous = linalg.get_compute_type(np.float32)
        linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)
        try:
            yield
        finally:
            linalg.set_compute_type(np.float32, previous)


def check_matmul_precision(precision: str, gpu: bool, dtype: np.dtype) -> None:
    """Refuse a precision the backend cannot honour (one line): TF32 is a GPU format for
    float32 products, and nothing is trained as something other than what was asked."""
    if precision not in MATMUL_PRECISIONS:
        raise ParameterError(
            f"--matmul-precision must be {' or '.join(MATMUL_PRECISIONS)}, got {precision!r}"
        )
    if precision == "tf32" and not (gpu and dtype == np.dtype(np.float32)):
        raise ParameterError(
            "--matmul-precision tf32 needs --gpu and --dtype float32 (TF32 is the GPU "
            "tensor cores' format for float32 products)"
        )


def get_backend(
    gpu: bool = False, dtype: Any = "float32", matmul_precision: str = "float32"
) -> Backend:
    """The NumPy backend, or the CuPy one when ``gpu`` is true.

    ``matmul_precision="tf32"`` (CuPy, float32 only) lets each training step's products use
    TF32 tensor cores. Raises :class:`BackendError` with a one-line reason when CuPy is not
    installed or no CUDA device can be used.
    """
    resolved = resolve_dtype(dtype)
    check_matmul_precision(matmul_precision, gpu, resolved)
    if not gpu:
        try:
            import scipy.sparse as sparse
        except ImportError:  # pragma: no cover - scipy is a dependency
            sparse = None
        return Backend("numpy", np, sparse, resolved)
    try:
        import cupy
    except ImportError as exc:
        raise BackendError(
            "--gpu needs CuPy, which is not installed: pip install 'sparsekit[gpu-cuda13]' "
            f"or 'sparsekit[gpu-cuda12]', for your CUDA major version [{exc.__class__.__name__}]"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing
        raise BackendError(
            f"--gpu: CuPy is installed but CUDA is not usable: {first_line(exc)}"
        ) from None
    if count < 1:
        raise BackendError("--gpu: CuPy is installed but no CUDA device was found")
    try:
        import cupyx.scipy.sparse as sparse
    except Exception:  # pragma: no cover - part of CuPy
        sparse = None
    if matmul_precision == "tf32":
        from cupy._core import _routines_linalg as linalg

        if not hasattr(linalg, "set_compute_type"):
            raise BackendError(
                f"--matmul-precision tf32: CuPy {cupy.__version__} cannot switch its compute type"
            )
    return CupyBackend(
        "cupy", cupy, sparse, resolved, is_gpu=True, matmul_precision=matmul_precision
    )


def array_module(array: Any) -> ModuleType:
    """The array namespace of ``array``: CuPy for device arrays, else NumPy.

    An array of another type that declares its namespace the array-API way
    (``__array_namespace__``, e.g. the simulated device's arrays) gets that namespace.
    """
    if type(array).__module__.split(".")[0] == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        return cupy
    if not isinstance(array, np.ndarray) and hasattr(type(array), "__array_namespace__"):
        return array.__array_namespace__()
    return np
