"""Many runs at once: compare, sweeps, their job pools and executors, and multi-run reports."""
