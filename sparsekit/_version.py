"""The package version, a leaf every floor may read (``sparsekit --version``, run files)."""

__version__ = "0.1.0"
