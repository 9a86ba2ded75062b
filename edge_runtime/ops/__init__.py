"""Operations: benchmarks, the metrics endpoint, board detection and device profiles.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.ops.bench import (
        Timing as Timing,
    )
    from edge_runtime.ops.bench import (
        environment as environment,
    )
    from edge_runtime.ops.bench import (
        format_timings as format_timings,
    )
    from edge_runtime.ops.bench import (
        run_interleaved as run_interleaved,
    )
    from edge_runtime.ops.bench import (
        write_csv as write_csv,
    )
    from edge_runtime.ops.bench import (
        write_report as write_report,
    )
    from edge_runtime.ops.bench_run import (
        BENCH_EXAMPLES as BENCH_EXAMPLES,
    )
    from edge_runtime.ops.bench_run import (
        BenchOptions as BenchOptions,
    )
    from edge_runtime.ops.bench_run import (
        LatencyReport as LatencyReport,
    )
    from edge_runtime.ops.bench_run import (
        add_bench_arguments as add_bench_arguments,
    )
    from edge_runtime.ops.bench_run import (
        format_report as format_report,
    )
    from edge_runtime.ops.bench_run import (
        options_from_args as options_from_args,
    )
    from edge_runtime.ops.bench_run import (
        run_bench as run_bench,
    )
    from edge_runtime.ops.bench_run import (
        run_latency as run_latency,
    )
    from edge_runtime.ops.bench_run import (
        write_outputs as write_outputs,
    )
    from edge_runtime.ops.device import (
        AUTO as AUTO,
    )
    from edge_runtime.ops.device import (
        Board as Board,
    )
    from edge_runtime.ops.device import (
        Profile as Profile,
    )
    from edge_runtime.ops.device import (
        bundle_formats as bundle_formats,
    )
    from edge_runtime.ops.device import (
        choose_profile as choose_profile,
    )
    from edge_runtime.ops.device import (
        detect_board as detect_board,
    )
    from edge_runtime.ops.device import (
        engine_options_for as engine_options_for,
    )
    from edge_runtime.ops.device import (
        installed_runtimes as installed_runtimes,
    )
    from edge_runtime.ops.device import (
        load_profile as load_profile,
    )
    from edge_runtime.ops.device import (
        profile_names as profile_names,
    )
    from edge_runtime.ops.device import (
        resolve_engine_options as resolve_engine_options,
    )
    from edge_runtime.ops.metrics import (
        Metrics as Metrics,
    )
    from edge_runtime.ops.metrics import (
        MetricsSnapshot as MetricsSnapshot,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "bench": ("Timing", "run_interleaved", "environment", "write_report", "write_csv", "format_timings"),
        "bench_run": (
            "BENCH_EXAMPLES",
            "BenchOptions",
            "LatencyReport",
            "add_bench_arguments",
            "format_report",
            "options_from_args",
            "run_bench",
            "run_latency",
            "write_outputs",
        ),
        "device": (
            "AUTO",
            "Board",
            "Profile",
            "bundle_formats",
            "choose_profile",
            "detect_board",
            "engine_options_for",
            "installed_runtimes",
            "load_profile",
            "profile_names",
            "resolve_engine_options",
        ),
        "metrics": ("MetricsSnapshot", "Metrics"),
    },
)
