"""Environment defaults that must be in place before NumPy loads its BLAS.

OpenBLAS keeps each idle worker thread busy-waiting for 2^28 cycles (about 0.1 s) after
every matrix product. A training step alternates matrix products with elementwise work that
sparsekit spreads over the same cores (:func:`sparsekit.kernels.split_run`), so with the
default every such thread competes with a spinning BLAS thread and gains nothing; with
``OPENBLAS_THREAD_TIMEOUT=4`` (2^4 cycles) the BLAS threads sleep at once and the step is
15-25% faster on two cores (``docs/performance.md``). Matrix products themselves are not
slower.

OpenBLAS reads the variable once, when it is loaded, so this only takes effect when
sparsekit is imported before NumPy (as the ``sparsekit`` command does). A value already set
is kept.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
