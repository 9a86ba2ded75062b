"""``edge-runtime``: the device-side command.

Examples::

    edge-runtime run --bundle build/demo_bundle --source synthetic --max-frames 100
    edge-runtime run --config /etc/edge-runtime/config.toml
    edge-runtime run --bundle build/demo_bundle --source camera:0 --validate
    edge-runtime health --state-dir /var/lib/edge-runtime
    edge-runtime inspect build/demo_bundle
    edge-runtime selftest build/demo_bundle --precision int8
    edge-runtime device --json
    edge-runtime update demo-v2.tar.gz --config /etc/edge-runtime/config.toml
    edge-runtime command --broker mqtt://broker:1883 --device cam1 --key operator.key status
    edge-runtime bench build/demo_bundle --seconds 10 --out bench-out
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import EdgeRuntimeError

if TYPE_CHECKING:
    from edge_runtime.bundle.reader import Bundle

RUN_EXAMPLES = """examples:
  edge-runtime run --bundle build/demo_bundle --source synthetic --max-frames 100
  edge-runtime run --bundle build/demo_bundle --source ./frames/ --output results.jsonl
  edge-runtime run --bundle build/demo_bundle --source camera:0 --threads 4
  edge-runtime run --config /etc/edge-runtime/config.toml
  edge-runtime run --config config.toml --validate
  edge-runtime run --bundle bundle --source camera:0 --trusted-key release.pub --trusted-key next.pub
  edge-runtime run --bundle bundle --source camera:0 --backend tflite --precision int8 --strict

A graph without an artifact of the backend's format runs on the other backend (tflite <->
onnxruntime), and one without the preferred precision at the next best one, each with a log line;
--strict refuses such a bundle instead. Heads disabled in the config ([heads.NAME] enabled =
false) are not loaded.

SOURCE: synthetic[:WxH], a folder of images, a video file, camera:N, rtsp://..., gst:PIPELINE
(video files, camera, rtsp and gst need the [camera] extra; image folders need [camera] or
[images], unless they hold only .npy, .png and uncompressed .bmp files). Every flag also has a
config-file key and an EDGE_RUNTIME_* environment variable (e.g. EDGE_RUNTIME_MAX_FRAMES=100);
precedence, lowest first: the bundle manifest < the config file < the environment < flags <
signed remote commands (not persisted). All settings, [heads.<name>] included:
docs/configuration.md.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Run multi-task bundles on a device and stream their results.",
        epilog="examples:\n  edge-runtime run --bundle build/demo_bundle --source synthetic --max-frames 10\n"
        "  edge-runtime inspect build/demo_bundle\n  edge-runtime selftest build/demo_bundle --precision int8\n"
        "  edge-runtime health",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from edge_runtime.settings.run import RUN

    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a bundle on a frame source and write results",
        description="Read frames, run the trunk once per frame and the due heads, write one JSON line per frame.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON config file (keys: docs/configuration.md)")
    RUN.add_flags(run)
    run.add_argument("--validate", action="store_true", help="check config, bundle and source, then exit")

    health = sub.add_parser(
        "health",
        help="exit 0 when the daemon's heartbeat is fresh (for Docker HEALTHCHECK, scripts)",
        epilog="examples:\n  edge-runtime health\n  edge-runtime health --state-dir /var/lib/edge-runtime --max-age 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from edge_runtime.daemon.health import add_health_arguments

    add_health_arguments(health)

    from edge_runtime.cloud.cli import SUBSCRIBE_EXAMPLES, add_subscribe_arguments

    subscribe = sub.add_parser(
        "subscribe",
        help="receive, decode and de-duplicate results from MQTT (cloud side)",
        description="Subscribe to device results, decode them and write one line per result; "
        "prints counters and gaps per (device, epoch) to stderr on Ctrl-C / SIGTERM.",
        epilog=SUBSCRIBE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_subscribe_arguments(subscribe)

    from edge_runtime.trust.command_cli import COMMAND_EXAMPLES, add_command_arguments

    command = sub.add_parser(
        "command",
        help="send a signed remote command to a device over MQTT and print its reply",
        description="Sign a command with the operator key, publish it to <prefix>/<device>/cmd "
        "and wait for the reply on <prefix>/<device>/reply.",
        epilog=COMMAND_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_command_arguments(command)

    from edge_runtime.trust.update_cli import UPDATE_EXAMPLES, add_update_arguments

    update = sub.add_parser(
        "update",
        help="install a bundle or a head-only package into the A/B slots (verify, self-test, switch, rollback)",
        description="Stage SOURCE, verify it (signature, hashes, self-test) and make it active; "
        "a running daemon with the same state directory switches to it between frames.",
        epilog=UPDATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_update_arguments(update)

    inspect_cmd = sub.add_parser(
        "inspect",
        help="verify a bundle's checksums and show its trunk, heads and artifacts",
        epilog="examples:\n  edge-runtime inspect build/demo_bundle\n  edge-runtime -v inspect /opt/bundles/current\n"
        "  edge-runtime inspect /opt/bundles/current --trusted-key /etc/edge-runtime/release.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect_cmd.add_argument("bundle", metavar="BUNDLE_DIR")
    inspect_cmd.add_argument(
        "--trusted-key",
        action="append",
        dest="trusted_keys",
        metavar="PATH",
        help="check the signature against this public key (repeatable); fails when it does not check out",
    )

    selftest = sub.add_parser(
        "selftest",
        help="run the bundle's self-test frames and compare every head with the float model's outputs",
        description="Load the bundle with the --backend and --precision given here (default onnxruntime, fp32; "
        "unlike 'run', no device profile or config file is read), run its stored self-test frames and "
        "compare each head's raw outputs with the float model's: fp32 nearly exact, fp16/int8 by cosine "
        "similarity. Exit 0 when every head passes (or the bundle has no self-test data), 1 when one fails.",
        epilog="examples:\n  edge-runtime selftest build/demo_bundle\n"
        "  edge-runtime selftest build/demo_bundle --precision int8\n"
        "  edge-runtime selftest /opt/bundles/current --backend tflite --precision int8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    selftest.add_argument("bundle", metavar="BUNDLE_DIR")
    from edge_runtime.bundle.specs import PRECISIONS
    from edge_runtime.inference.backends import BACKENDS

    selftest.add_argument("--backend", choices=tuple(BACKENDS), default="onnxruntime")
    selftest.add_argument("--precision", choices=PRECISIONS, default="fp32")

    device = sub.add_parser(
        "device",
        help="show the detected board, the chosen device profile and why, and the installed runtimes",
        epilog="examples:\n  edge-runtime device\n  edge-runtime device --profile jetson-orin --json\n\n"
        "A profile's backend, precision and threads are defaults: the config file, EDGE_RUNTIME_* and flags win.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    device.add_argument("--profile", metavar="NAME", help="show this profile instead of the detected one")
    device.add_argument("--json", action="store_true", help="print one JSON object")
    device.add_argument("--root", metavar="DIR", default="/", help="read the board's files under DIR (default: /)")
    device.add_argument("--machine", help=argparse.SUPPRESS)
    device.add_argument(
        "--bundle", metavar="BUNDLE_DIR", help="also say whether this bundle is tuned here (edge-runtime tune)"
    )
    device.add_argument("--state-dir", metavar="DIR", help="where the tuning is kept (default: the daemon's)")

    from edge_runtime.ops.bench_run import BENCH_EXAMPLES, add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="measure per-stage latency of a bundle on this machine (table, JSON, CSV, markdown, PNG)",
        description="Warm up, then time Engine.infer and the encoding per stage on synthetic frames.",
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(bench)

    from edge_runtime.tuning.cli import TUNE_EXAMPLES, add_tune_arguments

    tune = sub.add_parser(
        "tune",
        help="measure which backend, precision and threads run each graph fastest here; keep the choice",
        description="Time the candidates the bundle allows on this device (backends, execution providers, "
        "artifacts that passed the gate and their self-test, trunk threads), interleaved on the bundle's "
        "self-test frames: the trunk first, then each head; write tuning.json into the state directory.",
        epilog=TUNE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_tune_arguments(tune)
    handlers = {
        "run": _run,
        "health": _health,
        "subscribe": _subscribe,
        "command": _command,
        "update": _update,
        "inspect": _inspect,
        "selftest": _selftest,
        "device": _device,
        "bench": _bench,
        "tune": _tune,
    }
    for name, subparser in sub.choices.items():
        subparser.set_defaults(func=handlers[name])  # a subcommand without a handler fails here, loudly
    return parser


def _run(args: argparse.Namespace) -> int:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.daemon.pipeline import Daemon
    from edge_runtime.daemon.validation import validate
    from edge_runtime.settings.run import RUN

    config = RuntimeConfig.load(config_file=args.config, flags=RUN.flag_values(args))
    if args.validate:
        print(validate(config))
        return 0
    return Daemon(config).run()


def _tune(args: argparse.Namespace) -> int:
    from edge_runtime.tuning.cli import run_tune

    return run_tune(args)


def _health(args: argparse.Namespace) -> int:
    from edge_runtime.config import default_state_dir
    from edge_runtime.daemon.health import HEALTHY, check_health, limits_from_args

    code, line = check_health(args.state_dir or default_state_dir(), limits_from_args(args))
    print(line, file=sys.stdout if code == HEALTHY else sys.stderr)
    return code


def _device(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from edge_runtime.ops.device import choose_profile, detect_board, engine_options_for, installed_runtimes

    root, machine = Path(args.root), args.machine
    board = detect_board(root, machine)
    profile, reason = choose_profile(board, args.profile)
    runtimes = installed_runtimes()
    options, notes = engine_options_for(profile, backend=None, precision=None, threads=None, runtimes=runtimes)
    effective = {
        "backend": options.backend,
        "providers": list(options.providers) if options.providers else None,
        "precision": options.precision,
        "threads": options.threads,
        "head_threads": options.head_threads,
    }
    tuning = _tuning_state(args.bundle, args.state_dir) if args.bundle else None
    if args.json:
        report = {
            "tuning": tuning,
            "board": {
                "model": board.model,
                "machine": board.machine,
                "l4t_release": board.l4t_release,
                "cpu": list(board.cpu_parts),
                "detected_profile": board.profile,
                "evidence": [{"source": where, "says": what} for where, what in board.evidence],
            },
            "profile": profile.settings(),
            "reason": reason,
            "effective": effective,
            "fallbacks": notes,
            "runtimes": runtimes,
        }
        print(json.dumps(report, indent=2))
        return 0
    lines = [f"board:    {board.describe()}"]
    lines += [f"  {where}: {what}" for where, what in board.evidence]
    lines.append(f"profile:  {profile.name}{'' if profile.supported else '  (UNSUPPORTED)'}: {profile.description}")
    lines.append(f"  why: {reason}")
    for key in ("backend", "providers", "precision", "threads", "head_threads", "camera"):
        value = getattr(profile, key)
        shown = (
            ", ".join(value)
            if isinstance(value, tuple)
            else "all cores"
            if value is None and key == "threads"
            else value
        )
        lines.append(f"  {key}: {'-' if shown is None else shown}")
    if profile.notes:
        lines.append(f"  notes: {profile.notes}")
    lines.append(
        "effective: "
        + ", ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in effective.items() if v is not None)
        + " (config, EDGE_RUNTIME_* and flags override these)"
    )
    lines += [f"  fallback: {note}" for note in notes]
    if tuning is not None:
        choice = "; ".join(f"{graph} {config}" for graph, config in (tuning["choice"] or {}).items())
        lines.append(f"tuning:   {tuning['reason']}" + (f": {choice} (backend/precision auto)" if choice else ""))
    ort_info, tflite_info = runtimes["onnxruntime"], runtimes["tflite"]
    lines.append("runtimes:")
    lines.append(
        f"  onnxruntime {ort_info['version']}: {', '.join(ort_info['providers'])}"
        if ort_info
        else "  onnxruntime: missing"
    )
    lines.append(
        f"  LiteRT: {tflite_info['package']} {tflite_info['version']}"
        if tflite_info
        else "  LiteRT: not installed (pip install 'edge-runtime[tflite]')"
    )
    print("\n".join(lines))
    return 0


def _tuning_state(bundle: str, state_dir: str | None) -> dict[str, Any]:
    """``{"tuned", "reason", "choice"}`` of ``bundle`` in ``state_dir`` on this device now."""
    from pathlib import Path

    from edge_runtime.config import default_state_dir
    from edge_runtime.tuning.record import tuning_for

    choice, why = tuning_for(Path(bundle), Path(state_dir) if state_dir else default_state_dir())
    described = None if choice is None else {graph: config.describe() for graph, config in choice.items()}
    reason = why if choice is not None else f"not tuned ({why})"
    return {"tuned": choice is not None, "reason": reason, "choice": described}


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.bundle.summary import format_bundle
    from edge_runtime.trust.keys import load_public_keys
    from edge_runtime.trust.signatures import signature_state

    keys = load_public_keys(args.trusted_keys or [])
    bundle = load_bundle(args.bundle, trusted_keys=keys, warn_unchecked=False)
    print(format_bundle(bundle))
    print(f"signature: {signature_state(Path(args.bundle), bundle.signed_by)}")
    print(f"self-test: {_selftest_line(bundle)}")
    return 0


def _selftest_line(bundle: Bundle) -> str:
    import numpy as np

    spec = bundle.manifest.selftest
    if spec is None:
        return "none (re-export with 'edge-export split' to add it)"
    if isinstance(spec.frames, tuple):
        count = len(spec.frames)
    else:
        count = len(np.load(bundle.root / spec.frames, mmap_mode="r", allow_pickle=False))
    measured = ", recorded agreement for " + ", ".join(spec.agreement) if spec.agreement else ""
    return (
        f"{count} {spec.source} frames{measured}, heads {', '.join(bundle.manifest.heads)} "
        "('edge-runtime selftest' runs them)"
    )


def _selftest(args: argparse.Namespace) -> int:
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.trust.selftest import run_selftest

    with Engine.from_bundle(args.bundle, EngineOptions(backend=args.backend, precision=args.precision)) as engine:
        report = run_selftest(engine)
    print(report.summary())
    if not report.passed:
        print(f"edge-runtime: self-test FAILED: {report.failures()}", file=sys.stderr)
        return 1
    if report.skipped is None:
        print(f"self-test passed: {len(report.heads)} heads on {report.frames} {report.source} frames")
        if report.vacuous:
            print(
                f"note: nothing to compare for {', '.join(report.vacuous)} on these frames (an empty check): "
                "quantize or convert with real --calib frames to test on frames the heads respond to"
            )
    return 0


def _update(args: argparse.Namespace) -> int:
    from edge_runtime.trust.update_cli import run_update

    return run_update(args)


def _bench(args: argparse.Namespace) -> int:
    from edge_runtime.ops.bench_run import run_bench

    return run_bench(args)


def _command(args: argparse.Namespace) -> int:
    from edge_runtime.trust.command_cli import run_command

    return run_command(args)


def _subscribe(args: argparse.Namespace) -> int:
    from edge_runtime.cloud.cli import run_subscribe

    return run_subscribe(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-runtime``; returns the process exit code. A user mistake is one
    line on stderr and exit code 2 (``-v`` adds the traceback, with the error's cause)."""
    args = _build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        code: int = args.func(args)
        return code
    except EdgeRuntimeError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
