"""A simulated GPU: CuPy's API over NumPy, with arrays that stay "on the device".

A testing tool, never chosen by ``--gpu``: it lets the GPU path of sparsekit (and of a
plugin) run in CI on a machine without CUDA. ``simulated_backend()`` returns a
:class:`~sparsekit.backend.Backend` whose ``is_gpu`` is true, so every GPU branch is taken,
whose ``xp`` is a CuPy-like namespace and whose ``sparse`` stands in for
``cupyx.scipy.sparse``. Arithmetic is NumPy's, so results equal the NumPy backend's up to
the rounding of the GPU formulas (which skip the CPU's fused loops).

Its arrays (:class:`DeviceArray`) behave as CuPy's do where a CPU habit would go wrong:

* **No implicit conversion to NumPy.** ``np.asarray(a)``, ``np.array(a)``, a NumPy function
  (``np.sum(a)``) or ufunc (``np.exp(a)``) on a device array raises
  :class:`DeviceMisuseError`, as does handing a NumPy array to a device function
  (``xp.add(a, host)``, ``a[host_index]``, ``a[...] = host``): upload it with
  ``xp.asarray`` first. NumPy and Python *scalars* mix with device arrays freely, as in CuPy.
* **Explicit transfers.** ``a.get()``, ``xp.asnumpy(a)``, ``float(a)``, ``int(a)``,
  ``bool(a)``, ``a.item()``, ``a.tolist()`` and ``repr(a)`` copy to the host.
* **Sizes read from values.** ``xp.flatnonzero``, ``xp.nonzero``, ``xp.unique`` and
  boolean-mask indexing (``a[a > 0]``) make CuPy read a count back to size the result: a
  host transfer too.
* **0-d results stay on the device.** ``xp.vdot(a, b)``, ``a.sum()`` and ``a[i, j]`` are 0-d
  device arrays, not NumPy scalars.

Inside a training step (``with backend.step_scope():``, which the trainer opens around each
minibatch's work) every one of those host transfers raises :class:`HostTransferError`,
naming what was transferred: a transfer there makes a real GPU wait for the step to finish
(a synchronisation per step).

Only what sparsekit uses of CuPy is here (``xp.cuda.get_current_stream().synchronize()``,
the array functions and ufuncs its code calls, ``xp.linalg.solve``, ``sparse.csr_matrix``);
a missing name raises :class:`AttributeError` naming it, so a plugin author knows what to
add or avoid.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit.backend import Backend, check_matmul_precision, resolve_dtype
from sparsekit.errors import BackendError

__all__ = [
    "DeviceArray",
    "DeviceMisuseError",
    "HostTransferError",
    "SimulatedBackend",
    "in_step",
    "simulated_backend",
]


class DeviceMisuseError(BackendError, TypeError):
    """A simulated device array used as host memory, or host memory given to the device."""


class HostTransferError(DeviceMisuseError):
    """A device-to-host transfer inside a training step."""


_scope = threading.local()


def in_step() -> bool:
    """Whether this thread is inside a training step of a simulated backend."""
    return getattr(_scope, "depth", 0) > 0


def _describe(array: np.ndarray) -> str:
    return f"a {array.dtype} device array of shape {array.shape}"


def _transfer(what: str, array: np.ndarray) -> None:
    """Raise :class:`HostTransferError` for ``what`` inside a step; else allow it."""
    if in_step():
        raise HostTransferError(
            f"host transfer inside a training step: {what} of {_describe(array)} "
            "(keep it on the device, or move it out of the step)"
        )


def _host_array_error(where: str, value: np.ndarray) -> DeviceMisuseError:
    return DeviceMisuseError(
        f"{where} got a host NumPy array ({value.dtype}, shape {value.shape}); "
        "upload it with xp.asarray first"
    )


_SCALARS = (bool, int, float, complex, np.generic)


def _unwrap(value: Any, where: str) -> Any:
    """Device arrays to their NumPy storage (recursively in lists and tuples); a host
    NumPy array raises."""
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, np.ndarray):
        raise _host_array_error(where, value)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where) for v in value)
    return value


def _wrap(value: Any) -> Any:
    """NumPy results as device arrays (0-d for scalars), recursively in tuples and lists."""
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, (list, tuple)):
        return type(value)(_wrap(v) for v in value)
    return value


def _operand(value: Any, where: str) -> Any:
    """The other operand of an arithmetic operator, or NotImplemented."""
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, np.ndarray):
        raise _host_array_error(where, value)
    if isinstance(value, _SCALARS):
        return value
    return NotImplemented


class DeviceArray:
    """An array on the simulated device (see the module docstring)."""

    __slots__ = ("_data",)
    __hash__ = None  # type: ignore[assignment]  # mutable, like every array

    def __init__(self, data: np.ndarray) -> None:
        self._data = data

    def __array_namespace__(self, api_version: Any = None) -> Any:
        """The simulated CuPy namespace (:data:`xp`), as the array API declares it."""
        return xp

    # -- metadata (no transfer) --------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def itemsize(self) -> int:
        return self._data.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return self._data.strides

    @property
    def T(self) -> DeviceArray:  # noqa: N802 - NumPy's name
        return DeviceArray(self._data.T)

    @property
    def device(self) -> str:
        return "simulated"

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[DeviceArray]:
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        for i in range(len(self._data)):
            yield DeviceArray(self._data[i, ...])

    # -- host transfers ----------------------------------------------------------------------

    def get(self) -> np.ndarray:
        """A NumPy copy on the host (an explicit transfer)."""
        _transfer(".get()", self._data)
        return self._data.copy()

    def item(self) -> Any:
        _transfer(".item()", self._data)
        return self._data.item()

    def tolist(self) -> Any:
        _transfer(".tolist()", self._data)
        return self._data.tolist()

    def __float__(self) -> float:
        _transfer("float()", self._data)
        return float(self._data)

    def __int__(self) -> int:
        _transfer("int()", self._data)
        return int(self._data)

    def __complex__(self) -> complex:
        _transfer("complex()", self._data)
        return complex(self._data)

    def __bool__(self) -> bool:
        _transfer("bool()", self._data)
        return bool(self._data)

    def __repr__(self) -> str:
        _transfer("repr()", self._data)
        return f"DeviceArray({self._data!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        _transfer("format()", self._data)
        return format(self._data.item() if self._data.ndim == 0 else self._data, spec)

    # -- what NumPy would do implicitly --------------------------------------------------------

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise DeviceMisuseError(
            f"implicit conversion of {_describe(self._data)} to a NumPy array "
            "(np.asarray, np.array or CPU-only code); use .get() or backend.to_numpy()"
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise DeviceMisuseError(
            f"NumPy function np.{func.__name__} called on {_describe(self._data)}; "
            f"use xp.{func.__name__} (backend.xp)"
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # A NumPy scalar on the left of an operator (np.float32(2) * a) arrives here as a
        # ufunc call; CuPy computes that on the device, and so does this.
        others = [v for v in inputs if v is not self]
        if (
            method == "__call__"
            and not kwargs
            and len(inputs) == 2
            and len(others) == 1
            and isinstance(others[0], _SCALARS)
        ):
            return _wrap(ufunc(*(_unwrap(v, ufunc.__name__) for v in inputs)))
        raise DeviceMisuseError(
            f"NumPy ufunc np.{ufunc.__name__}"
            f"{'' if method == '__call__' else '.' + method} called on "
            f"{_describe(self._data)}; use xp.{ufunc.__name__} (backend.xp)"
        )

    # -- indexing ----------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> DeviceArray:
        if in_step() and _has_mask(key):
            _transfer("boolean-mask indexing (the result's size is read back)", self._data)
        return _wrap(self._data[_unwrap(key, "indexing a device array")])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[_unwrap(key, "indexing a device array")] = _unwrap(
            value, "assigning into a device array"
        )

    # -- methods -----------------------------------------------------------------------------

    def copy(self) -> DeviceArray:
        return DeviceArray(self._data.copy())

    def astype(self, dtype: Any, copy: bool = True) -> DeviceArray:
        return DeviceArray(self._data.astype(dtype, copy=copy))

    def reshape(self, *shape: Any, **kwargs: Any) -> DeviceArray:
        return DeviceArray(self._data.reshape(*shape, **kwargs))

    def fill(self, value: Any) -> None:
        self._data.fill(_unwrap(value, "fill"))


def _has_mask(key: Any) -> bool:
    """Whether an index holds a boolean device array (CuPy reads its count back to size the
    result: a synchronisation)."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, DeviceArray) and k.dtype == np.bool_ and k.ndim > 0 for k in keys)


#: Functions whose result size depends on the values: CuPy reads a count back to the host.
_SIZED_BY_VALUES = frozenset({"nonzero", "flatnonzero", "argwhere", "unique"})


def _method(name: str) -> Callable[..., Any]:
    def call(self: DeviceArray, *args: Any, **kwargs: Any) -> Any:
        where = f"DeviceArray.{name}"
        if name in _SIZED_BY_VALUES:
            _transfer(f".{name}() (the result's size is read back)", self._data)
        args = _unwrap(args, where)
        kwargs = {k: _unwrap(v, where) for k, v in kwargs.items()}
        return _wrap(getattr(self._data, name)(*args, **kwargs))

    call.__name__ = name
    return call


for _name in (
    "all any argmax argmin argsort clip cumsum dot flatten max mean min nonzero prod ravel"
    " repeat sort squeeze std sum swapaxes take transpose var"
).split():
    setattr(DeviceArray, _name, _method(_name))


def _binary(name: str) -> Callable[..., Any]:
    op = getattr(np.ndarray, name)

    def call(self: DeviceArray, other: Any) -> Any:
        value = _operand(other, f"operator {name}")
        if value is NotImplemented:
            return NotImplemented
        result = op(self._data, value)
        if result is NotImplemented:
            return NotImplemented
        if result is self._data:  # in place (a += b)
            return self
        return _wrap(result)

    call.__name__ = name
    return call


for _op in "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift".split():
    for _form in (f"__{_op}__", f"__r{_op}__", f"__i{_op}__"):
        setattr(DeviceArray, _form, _binary(_form))
for _form in ("__lt__", "__le__", "__eq__", "__ne__", "__gt__", "__ge__"):
    setattr(DeviceArray, _form, _binary(_form))
for _form in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(
        DeviceArray,
        _form,
        (lambda op: lambda self: DeviceArray(op(self._data)))(getattr(np.ndarray, _form)),
    )


# -- the namespace ---------------------------------------------------------------------------


class _Ufunc:
    """A NumPy ufunc over device arrays (``xp.add``, ``xp.add.at``, ...)."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def _out(self, kwargs: dict[str, Any]) -> Any:
        out = kwargs.get("out")
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        where = f"xp.{self.__name__}"
        out = self._out(kwargs)
        result = self._ufunc(
            *_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}
        )
        if isinstance(out, DeviceArray) and result is out._data:
            return out
        return _wrap(result)

    def at(self, a: DeviceArray, indices: Any, b: Any = None) -> None:
        where = f"xp.{self.__name__}.at"
        if not isinstance(a, DeviceArray):
            raise DeviceMisuseError(
                f"{where} needs a device array to update, got {type(a).__name__}"
            )
        args = (indices,) if b is None else (indices, b)
        self._ufunc.at(a._data, *_unwrap(args, where))

    def reduce(self, *args: Any, **kwargs: Any) -> Any:
        where = f"xp.{self.__name__}.reduce"
        return _wrap(
            self._ufunc.reduce(
                *_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}
            )
        )


def _function(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    where = f"xp.{name}"

    def call(*args: Any, **kwargs: Any) -> Any:
        if name in _SIZED_BY_VALUES and args and isinstance(args[0], DeviceArray):
            _transfer(f"{where} (the result's size is read back)", args[0]._data)
        out = kwargs.get("out")
        result = fn(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()})
        if isinstance(out, DeviceArray) and result is out._data:
            return out
        return _wrap(result)

    call.__name__ = name
    return call


def _upload(obj: Any, dtype: Any = None, copy: bool = True) -> DeviceArray:
    """``xp.asarray``/``xp.array``: a device copy of host data (a device array as it is)."""
    if isinstance(obj, DeviceArray):
        if dtype is None or np.dtype(dtype) == obj.dtype:
            return obj.copy() if copy else obj
        return obj.astype(dtype)
    data = np.array(
        _unwrap(obj, "xp.asarray") if isinstance(obj, (list, tuple)) else obj,
        dtype=dtype,
        copy=True,
    )
    if data.dtype == object:
        raise DeviceMisuseError(f"xp.asarray cannot upload a {type(obj).__name__}")
    return DeviceArray(data)


def _asnumpy(array: Any) -> np.ndarray:
    if isinstance(array, DeviceArray):
        _transfer("xp.asnumpy()", array._data)
        return array._data.copy()
    return np.asarray(array)


class _Stream:
    def synchronize(self) -> None:
        """Nothing is queued on a simulated device."""


_STREAM = _Stream()


def _make_xp() -> types.ModuleType:
    xp = types.ModuleType("sparsekit.backend.simulated.xp", "CuPy's API over NumPy (simulated).")
    for name in (
        "add subtract multiply divide true_divide negative maximum minimum sqrt square exp log"
        " log1p expm1 tanh abs absolute sign isfinite isnan isinf greater greater_equal less"
        " less_equal equal not_equal logical_and logical_or logical_not matmul power"
    ).split():
        setattr(xp, name, _Ufunc(getattr(np, name)))
    for name in (
        "argpartition argsort bincount broadcast_to clip concatenate count_nonzero cumsum dot"
        " einsum empty empty_like flatnonzero full full_like mean nonzero ones ones_like"
        " put_along_axis sort stack sum take take_along_axis vdot where zeros zeros_like arange"
        " any all max min outer argmax"
    ).split():
        setattr(xp, name, _function(name, getattr(np, name)))
    for name in (
        "bool_ int8 int16 int32 int64 uint8 float16 float32 float64 dtype newaxis finfo iinfo"
        " result_type pi inf nan e"
    ).split():
        setattr(xp, name, getattr(np, name))
    xp.asarray = lambda a, dtype=None: _upload(a, dtype, copy=False)
    xp.array = lambda a, dtype=None, copy=True: _upload(a, dtype, copy=copy)
    xp.ascontiguousarray = lambda a, dtype=None: _upload(a, dtype, copy=False)
    xp.asnumpy = _asnumpy
    xp.ndarray = DeviceArray
    xp.cuda = types.SimpleNamespace(get_current_stream=lambda: _STREAM)
    xp.linalg = types.SimpleNamespace(
        solve=_function("linalg.solve", np.linalg.solve), LinAlgError=np.linalg.LinAlgError
    )
    return xp


xp = _make_xp()


class _CSR:
    """``cupyx.scipy.sparse.csr_matrix`` over device arrays (products with dense arrays)."""

    def __init__(self, matrix: Any) -> None:
        self._matrix = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return self._matrix.shape

    @property
    def T(self) -> _CSR:  # noqa: N802 - SciPy's name
        return _CSR(self._matrix.T)

    def __matmul__(self, other: Any) -> Any:
        if not isinstance(other, DeviceArray):
            if isinstance(other, np.ndarray):
                raise _host_array_error("a sparse product", other)
            return NotImplemented
        return DeviceArray(np.asarray(self._matrix @ other._data))

    def __rmatmul__(self, other: Any) -> Any:
        if not isinstance(other, DeviceArray):
            if isinstance(other, np.ndarray):
                raise _host_array_error("a sparse product", other)
            return NotImplemented
        return DeviceArray(np.asarray(other._data @ self._matrix))


def _csr_matrix(arg: Any, shape: tuple[int, int] | None = None, copy: bool = False) -> _CSR:
    import scipy.sparse

    if not (isinstance(arg, tuple) and len(arg) == 3):
        raise DeviceMisuseError("sparse.csr_matrix takes (data, indices, indptr) here")
    data, indices, indptr = (
        a._data if isinstance(a, DeviceArray) else _unwrap(a, "sparse.csr_matrix") for a in arg
    )
    return _CSR(scipy.sparse.csr_matrix((data, indices, indptr), shape=shape, copy=copy))


sparse = types.ModuleType(
    "sparsekit.backend.simulated.sparse", "cupyx.scipy.sparse over NumPy (simulated)."
)
sparse.csr_matrix = _csr_matrix


@dataclass(frozen=True)
class SimulatedBackend(Backend):
    """A :class:`Backend` on the simulated device; ``step_scope`` guards host transfers."""

    @contextmanager
    def step_scope(self) -> Iterator[None]:
        _scope.depth = getattr(_scope, "depth", 0) + 1
        try:
            yield
        finally:
            _scope.depth -= 1


class SimulatedCollectives:
    """What NCCL does on a real device, on the simulated one: sums of device arrays across
    the ranks of ``comm`` (a host communicator), with no host transfer as far as the step
    can tell (the simulation hands the arrays' NumPy data to ``comm`` underneath). Data-parallel
    training takes it for the simulated device (:mod:`sparsekit.backend.nccl`), so CI runs the
    device path of a distributed step with its rule against transfers inside a step."""

    name = "simulated-nccl"

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank, self.size, self.distributed = comm.rank, comm.size, comm.distributed

    def allreduce_sum(self, array: Any) -> Any:
        data = array._data if isinstance(array, DeviceArray) else np.asarray(array)
        return DeviceArray(np.asarray(self.comm.allreduce_sum(data)))

    def allgather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def broadcast(self, value: Any, root: int = 0) -> Any:
        return self.comm.broadcast(value, root)

    def abort(self, code: int) -> None:
        self.comm.abort(code)


def simulated_backend(dtype: Any = "float32", matmul_precision: str = "float32") -> SimulatedBackend:
    """A backend that runs sparsekit's GPU path on the CPU (see the module docstring)::

    from sparsekit.backend.simulated import simulated_backend
    model = sparsekit.train("ksparse", images, backend=simulated_backend(), k=25)
    """
    resolved = resolve_dtype(dtype)
    # Checked and recorded as on CuPy; NumPy's products stay exact float32 (a dry run).
    check_matmul_precision(matmul_precision, True, resolved)
    return SimulatedBackend(
        "simulated-cupy", xp, sparse, resolved, is_gpu=True, matmul_precision=matmul_precision
    )
