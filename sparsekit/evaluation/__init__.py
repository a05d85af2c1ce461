"""Measuring one trained model: reconstruction, sparsity, the linear probe, recovery, figures."""
