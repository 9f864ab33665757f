"""Measurements that write JSON result rows (``benchmarks/results/<name>.jsonl``); not tests.

Run one with ``python -m benchmarks.<name> [--help]``; ``make bench`` runs them all.
"""
