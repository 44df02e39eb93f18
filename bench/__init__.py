"""Benchmarks against real servers and in-process, each run from the repository root as
`python -m bench.NAME` (bench.run: speed, bench.realworld: accuracy, ...); shared parts in bench.core."""
