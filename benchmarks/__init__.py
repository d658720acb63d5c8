"""Benchmarks of the server against the Immer course's lesson-style relay.

Run all: ``python -m benchmarks [--quick]``; one: ``python -m benchmarks.replay_cost`` (also
``apply_throughput``, ``fanout``). Results (JSON, PNG) go to ``benchmarks/results/``; see
``benchmarks/README.md``.
"""
