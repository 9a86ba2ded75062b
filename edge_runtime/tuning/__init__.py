"""Measured, not assumed: which backend, precision and threads run each graph fastest here.

- :mod:`~edge_runtime.tuning.configs`: what one graph can run as (:class:`GraphConfig`) and the
  candidates a bundle allows on this device;
- :mod:`~edge_runtime.tuning.timing`: whole frames under per-graph configs, interleaved;
- :mod:`~edge_runtime.tuning.search`: the greedy tune (trunk, then each head) with self-tests;
- :mod:`~edge_runtime.tuning.record`: ``tuning.json``, keyed by bundle, board, runtimes and cores;
- :mod:`~edge_runtime.tuning.cli`: ``edge-runtime tune``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.tuning.configs import AUTO as AUTO
    from edge_runtime.tuning.configs import GraphConfig as GraphConfig
    from edge_runtime.tuning.configs import graph_candidates as graph_candidates
    from edge_runtime.tuning.record import TuningKey as TuningKey
    from edge_runtime.tuning.record import TuningRecord as TuningRecord
    from edge_runtime.tuning.record import load_tuning as load_tuning
    from edge_runtime.tuning.record import save_tuning as save_tuning
    from edge_runtime.tuning.record import tuning_for as tuning_for
    from edge_runtime.tuning.search import TuneOptions as TuneOptions
    from edge_runtime.tuning.search import TuneResult as TuneResult
    from edge_runtime.tuning.search import format_table as format_table
    from edge_runtime.tuning.search import tune as tune
    from edge_runtime.tuning.timing import GraphBench as GraphBench
    from edge_runtime.tuning.timing import interleave as interleave

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "configs": ("AUTO", "GraphConfig", "graph_candidates"),
        "record": ("TuningKey", "TuningRecord", "load_tuning", "save_tuning", "tuning_for"),
        "search": ("TuneOptions", "TuneResult", "format_table", "tune"),
        "timing": ("GraphBench", "interleave"),
    },
)
