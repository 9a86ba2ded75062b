"""Measured, not assumed: which backend, precision and threads run each graph fastest here.

- :mod:`~edge_runtime.tuning.configs`: what one graph can run as (:class:`GraphConfig`) and the
  candidates a bundle allows on this device;
- :mod:`~edge_runtime.tuning.timing`: whole frames under per-graph configs, interleaved;
- :mod:`~edge_runtime.tuning.search`: the greedy tune (trunk, then each head) with self-tests;
- :mod:`~edge_runtime.tuning.record`: ``tuning.json``, keyed by bundle, board, runtimes and cores;
- :mod:`~edge_runtime.tuning.cli`: ``edge-runtime tune``.
"""
