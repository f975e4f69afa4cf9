"""Benchmarks: run from the repository root as modules, ``python -m benchmarks.bench_kernels``
(see README.md here). Not part of the test run."""
