"""Reproductions of published results with sparsekit (see docs/results.md).

Run each as a module from the repository root, e.g. ``python -m experiments.ksparse_mnist``.
"""
