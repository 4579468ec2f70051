"""Benchmark cases of ``benchmarks/run.py``: each module has ``run(settings) -> CaseResult``."""
