"""Sparse coders: the code of a batch found by an optimiser, on NumPy or CuPy.

Each function takes a batch of signals X (B × D) and a dictionary D (H × D, atoms as rows)
and returns the codes Z (B × H) with X ≈ Z D. They use only the backend's array module, so
the same call runs on the CPU and on a GPU. The dictionary-learning methods and the
matching-pursuit SAE (:mod:`sparsekit.methods`) call them; so may anyone comparing coders.
"""

from sparsekit.coders.cd import coordinate_descent
from sparsekit.coders.l1 import CodeResult, fista, ista, l1_objective, lipschitz, soft_threshold
from sparsekit.coders.omp import omp
from sparsekit.coders.pursuit import Pursuit, matching_pursuit
from sparsekit.coders.threshold import threshold

__all__ = [
    "CodeResult",
    "Pursuit",
    "coordinate_descent",
    "fista",
    "ista",
    "l1_objective",
    "lipschitz",
    "matching_pursuit",
    "omp",
    "soft_threshold",
    "threshold",
]
