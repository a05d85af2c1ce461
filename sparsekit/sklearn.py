"""``sparsekit.sklearn``: the scikit-learn estimators, kept at this path (public API).

They live in :mod:`sparsekit.interop.sklearn`.
"""

from sparsekit.interop.sklearn import *  # noqa: F403
from sparsekit.interop.sklearn import __all__  # noqa: F401
