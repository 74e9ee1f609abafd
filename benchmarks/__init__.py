"""Benchmarks: pgqueue against Celery (Redis), Procrastinate and PGQueuer on one machine.

Run ``python -m benchmarks --quick`` from the repository root; see ``benchmarks/RESULTS.md``.
"""
