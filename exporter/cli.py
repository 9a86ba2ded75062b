"""``edge-export``: split a trained multi-task model into a verified bundle.

Examples::

    edge-export split examples/demo_multitask.onnx -o build/demo_bundle \\
        --input-spec examples/demo_input.toml --head-spec examples/demo_heads.toml
    edge-export split model.onnx -o bundle --task det=boxes,scores --task seg=mask
    edge-export split model.onnx -o bundle --boundary p3,p4 --force
    edge-export split mypkg.models:build_model -o bundle --input-spec input.toml
    edge-export split model.onnx -o bundle --calib frames/ --precision int8
    edge-export quantize build/demo_bundle --calib frames/ --precision mixed
    edge-export inspect build/demo_bundle
    edge-export keygen keys/release
    edge-export sign build/demo_bundle --key keys/release.key
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.errors import ConfigError, EdgeRuntimeError
from exporter.quantize_options import DEFAULT_MIN_AGREEMENT, PRECISION_CHOICES, QuantizeOptions

if TYPE_CHECKING:
    from exporter.chain import ExportResult

logger = logging.getLogger("exporter")

SPLIT_EXAMPLES = """examples:
  edge-export split examples/demo_multitask.onnx -o build/demo_bundle \\
      --input-spec examples/demo_input.toml --head-spec examples/demo_heads.toml
  edge-export split model.onnx -o bundle --task det=boxes,scores --task seg=mask
  edge-export split model.onnx -o bundle --boundary p3,p4 --force
  edge-export split model.pt -o bundle --input-spec input.toml       (PyTorch, needs [torch])
  edge-export split mypkg.models:build_model -o bundle --input-spec input.toml
  edge-export split model.onnx -o bundle --calib frames/ --precision int8   (split, then quantize)
  edge-export split model.keras -o bundle --calib frames/ --precision int8  (Keras: TFLite-only bundle)
  edge-export split face_detection.tflite -o bundle --input-spec input.toml  (TFLite -> ONNX bundle)

MODEL is an .onnx file with several outputs, a PyTorch .pt/.pth file (a saved nn.Module or
TorchScript), or 'module:callable' returning an nn.Module (with the [torch] extra), or a Keras
.keras/.h5 model (converted with TensorFlow in its own virtualenv; --boundary names layers there),
or a TFLite .tflite model (imported to ONNX with tflite2onnx in its own virtualenv, checked against
LiteRT, then split as ONNX; custom, Flex and sparse ops are refused). The file's content decides
which, not its suffix.
"""


QUANTIZE_EXAMPLES = """examples:
  edge-export quantize build/demo_bundle --calib frames/ --precision int8
  edge-export quantize bundle --calib calib.npy --precision mixed --min-agreement 0.98
  edge-export quantize bundle --calib frames/ -o bundle-int8

--precision int8 adds INT8 graphs, fp16 FP16 graphs, mixed both; a graph below the gate is not
added and stays float (the runtime takes the next best precision per graph).
"""


KEYGEN_EXAMPLES = """examples:
  edge-export keygen keys/release            (writes keys/release.key and keys/release.pub)
  edge-export keygen keys/release --force    (replace an existing pair)

The .key file (PKCS#8 PEM, mode 0600) signs bundles: keep it secret, off the devices. The .pub
file goes to the devices (config key trusted_keys, or edge-runtime run --trusted-key).
"""

SIGN_EXAMPLES = """examples:
  edge-export sign build/demo_bundle --key keys/release.key
  edge-export quantize bundle --calib frames/ && edge-export sign bundle --key keys/release.key

Writes BUNDLE_DIR/manifest.sig: base64 of the ed25519 signature over the exact bytes of
manifest.json, which lists the sha256 of every file. Quantizing or converting a bundle drops
the signature: sign again afterwards.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-export",
        description="Split a trained multi-task model into a verified trunk + heads bundle.",
        epilog="examples:\n  edge-export split model.onnx -o bundle\n  edge-export inspect bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    split = sub.add_parser(
        "split",
        help="split MODEL into trunk + heads, verify, write BUNDLE_DIR",
        description="Find the shared trunk and the per-task heads of MODEL, cut them into ONNX graphs, "
        "check that trunk then heads reproduce every original output, and write a bundle.",
        epilog=SPLIT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    split.add_argument(
        "model",
        metavar="MODEL",
        help="multi-output .onnx, .tflite, PyTorch .pt/.pth, Keras .keras/.h5, or module:callable",
    )
    split.add_argument("-o", "--output", required=True, metavar="BUNDLE_DIR", help="bundle directory to write")
    split.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME=OUT[,OUT...]",
        help="group model outputs into a named head (repeatable); others are grouped automatically",
    )
    split.add_argument(
        "--boundary", metavar="T[,T...]", help="trunk output tensor(s) to cut at, instead of the automatic boundary"
    )
    split.add_argument("--input-spec", metavar="FILE", help="YAML/TOML/JSON with the manifest 'input' keys")
    split.add_argument("--head-spec", metavar="FILE", help="YAML/TOML/JSON naming heads, decoders and schedules")
    split.add_argument(
        "--calib",
        metavar="PATH",
        help="real frames: a folder of images or a .npy array (raw frames or preprocessed inputs); "
        "verification runs on them too, and --precision calibrates with them",
    )
    split.add_argument(
        "--precision",
        choices=("fp32", *PRECISION_CHOICES),
        default="fp32",
        help="also quantize after splitting: int8, fp16 or mixed (default: fp32 only); see 'quantize'",
    )
    split.add_argument(
        "--formats",
        default=None,
        metavar="onnx[,tflite]",
        help="artifact formats to write (default: onnx); tflite converts after splitting: with onnx2tf, "
        "or with litert-torch when MODEL is PyTorch; a Keras model gives a TFLite-only bundle",
    )
    split.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help=f"fidelity gate per task for quantized graphs (default: {DEFAULT_MIN_AGREEMENT})",
    )
    split.add_argument("--name", help="bundle name (default: the model file name)")
    split.add_argument("--version", default="1", dest="bundle_version", help="bundle version (default: 1)")
    split.add_argument(
        "--tolerance", type=float, default=1e-5, help="max abs error allowed by verification (default: 1e-5)"
    )
    split.add_argument(
        "--no-selftest",
        dest="selftest",
        action="store_false",
        help="do not store self-test frames and the float model's outputs for them (selftest/)",
    )
    split.add_argument("--force", action="store_true", help="replace BUNDLE_DIR if it exists and is not empty")

    quantize = sub.add_parser(
        "quantize",
        help="add INT8 / FP16 graphs that pass a per-task fidelity gate to a bundle",
        description="Quantize the trunk and each head of BUNDLE_DIR (INT8: ONNX Runtime static QDQ, "
        "per-channel; FP16: float16 with float32 inputs/outputs), measure every task against the float "
        "model on frames held back from calibration, and keep only graphs whose agreement reaches "
        "--min-agreement; the others stay float (the runtime falls back per graph). Writes the fidelity "
        "into the manifest and quantization.json, and replaces the bundle atomically (or writes -o).",
        epilog=QUANTIZE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quantize.add_argument("bundle", metavar="BUNDLE_DIR")
    quantize.add_argument(
        "--calib",
        metavar="PATH",
        help="a folder of images or a .npy array (raw frames or preprocessed inputs); "
        "without it, generated frames (real frames calibrate better)",
    )
    quantize.add_argument("--precision", choices=PRECISION_CHOICES, default="int8", help="default: int8")
    quantize.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help=f"fidelity gate per task (default: {DEFAULT_MIN_AGREEMENT})",
    )
    quantize.add_argument("--limit", type=int, metavar="N", help="use at most N calibration frames")
    quantize.add_argument(
        "--held-out", type=float, default=0.25, metavar="F", help="share of frames kept to measure (default: 0.25)"
    )
    quantize.add_argument(
        "--keep-unmeasured",
        action="store_true",
        help="judge a detector on the detections there are even when the float model finds fewer than 10 on the "
        "frames (default: such a task cannot be measured and its candidates are not kept): for experiments",
    )
    quantize.add_argument("-o", "--output", metavar="DIR", help="write a new bundle there instead of replacing")
    quantize.add_argument("--force", action="store_true", help="replace -o DIR if it exists and is not empty")

    convert = sub.add_parser(
        "convert",
        help="add TFLite graphs (onnx2tf, FP32 and INT8 behind the fidelity gate) to a bundle",
        description="Convert the trunk and each head of BUNDLE_DIR to TFLite with onnx2tf (run in its own "
        "virtualenv, created on first use), FP32 and full INT8 calibrated on --calib, measure every task "
        "against the float ONNX model on held-back frames and keep only graphs that pass --min-agreement. "
        "The manifest records each TFLite tensor's name, layout permutation and quantization.",
        epilog="examples:\n  edge-export convert build/demo_bundle --to tflite --calib frames/\n"
        "  edge-export convert bundle --to tflite --precision fp32 -o bundle-tflite\n"
        "  edge-export convert bundle --to tflite --source-model mypkg.models:build --calib frames/   (litert-torch)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("bundle", metavar="BUNDLE_DIR")
    convert.add_argument("--to", choices=("tflite",), default="tflite", help="target format (default: tflite)")
    convert.add_argument("--calib", metavar="PATH", help="a folder of images or a .npy array (see quantize)")
    convert.add_argument(
        "--precision", choices=("fp32", "int8", "both"), default="both", help="TFLite precisions (default: both)"
    )
    convert.add_argument(
        "--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, help="fidelity gate per task (default: 0.99)"
    )
    convert.add_argument("--limit", type=int, metavar="N", help="use at most N calibration frames")
    convert.add_argument(
        "--source-model",
        metavar="MODEL",
        help="the PyTorch model the bundle was split from (.pt/.pth or module:callable, with 'trunk' and a "
        "'heads' ModuleDict): convert it with litert-torch instead of the ONNX graphs with onnx2tf",
    )
    convert.add_argument(
        "--keep-unmeasured",
        action="store_true",
        help="judge a detector on the detections there are even when the float model finds fewer than 10 on the "
        "frames (default: such a task cannot be measured and its candidates are not kept): for experiments",
    )
    convert.add_argument("-o", "--output", metavar="DIR", help="write a new bundle there instead of replacing")
    convert.add_argument("--force", action="store_true", help="replace -o DIR if it exists and is not empty")
    convert.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 (after writing the bundle and its report) when 'edge-runtime run --backend tflite' at a "
        "converted precision would not run every graph on LiteRT at that precision (a head the gate rejected "
        "would fall back to ONNX Runtime or to another precision)",
    )

    head_update = sub.add_parser(
        "head-update",
        help="package only what changed since a base bundle (a head update; the trunk stays on the device)",
        epilog="examples:\n  edge-export head-update build/demo_v2 --base build/demo_v1 -o demo-v2-heads.tar.gz\n"
        "  edge-runtime update demo-v2-heads.tar.gz   (on the device: completed from the running bundle)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    head_update.add_argument("bundle", metavar="NEW_BUNDLE")
    head_update.add_argument("--base", required=True, metavar="OLD_BUNDLE", help="the bundle the devices run")
    head_update.add_argument("-o", "--output", required=True, metavar="PKG.tar.gz", help="the package to write")

    inspect_cmd = sub.add_parser(
        "inspect",
        help="show a bundle's trunk, heads, boundary, artifacts and sizes; or a model's outputs and a head spec for it",
        epilog="examples:\n  edge-export inspect build/demo_bundle\n  edge-export inspect /opt/bundles/current\n"
        "  edge-export inspect model.onnx\n  edge-export inspect model.onnx --suggest-head-spec > heads.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect_cmd.add_argument("bundle", metavar="BUNDLE_DIR|MODEL.onnx")
    inspect_cmd.add_argument(
        "--suggest-head-spec",
        action="store_true",
        help="(a model) print a head spec for the output layouts recognised (YOLO, per-stride grids, priors, ...)",
    )
    inspect_cmd.add_argument(
        "--input-spec", metavar="FILE", help="(a model) input size and preprocessing, as for split"
    )

    keygen = sub.add_parser(
        "keygen",
        help="make an ed25519 key pair for signing bundles: KEY_PREFIX.key and KEY_PREFIX.pub",
        description="Write KEY_PREFIX.key (private, PKCS#8 PEM, mode 0600) and KEY_PREFIX.pub (public, PEM).",
        epilog=KEYGEN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen.add_argument("prefix", metavar="KEY_PREFIX", help="path prefix of the two key files")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")

    sign = sub.add_parser(
        "sign",
        help="sign a bundle's manifest with a private key (writes manifest.sig)",
        description="Check the bundle's sha256 hashes, then sign manifest.json with an ed25519 private key.",
        epilog=SIGN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.add_argument("bundle", metavar="BUNDLE_DIR")
    sign.add_argument("--key", required=True, metavar="PRIVATE_KEY", help="the .key file written by keygen")
    handlers = {
        "split": _run_split,
        "quantize": _run_quantize,
        "convert": _run_convert,
        "head-update": _run_head_update,
        "inspect": _run_inspect,
        "keygen": _run_keygen,
        "sign": _run_sign,
    }
    for name, subparser in sub.choices.items():
        subparser.set_defaults(func=handlers[name])  # a subcommand without a handler fails here, loudly
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if not verbose:
        logging.getLogger("exporter.split").setLevel(max(level, logging.WARNING))


def _run_split(args: argparse.Namespace) -> int:
    from exporter.chain import ExportOptions, export
    from exporter.pipeline import SplitOptions
    from exporter.specs import parse_task_flags

    options = ExportOptions(
        split=SplitOptions(
            tasks=parse_task_flags(args.task),
            boundary=[b.strip() for b in args.boundary.split(",") if b.strip()] if args.boundary else None,
            input_spec=args.input_spec,
            head_spec=args.head_spec,
            calib=args.calib,
            force=args.force,
            tolerance=args.tolerance,
            name=args.name,
            version=args.bundle_version,
            selftest=args.selftest,
        ),
        precision=args.precision,
        formats=args.formats,
        min_agreement=args.min_agreement,
    )
    export(args.model, args.output, options, progress=_print_stage)
    return 0


def _print_stage(stage: str, result: ExportResult) -> None:
    """What ``edge-export split`` prints after each stage of :func:`exporter.chain.export`."""
    if stage == "split" and result.keras is not None:
        keras = result.keras
        print(f"wrote {keras.bundle_dir} (TFLite only)")
        automatic = "automatic: last shared layer" if keras.automatic else "given"
        print(f"  boundary: {', '.join(keras.boundary)} ({automatic})")
        heads = ", ".join(f"{h} ({', '.join(o)})" for h, o in keras.heads.items())
        print(f"  heads:    {heads}")
        print(f"  verified: max abs error {keras.max_abs_error:.3g} against Keras over {keras.samples} frames")
    elif stage == "split" and result.split is not None:
        split = result.split
        heads = ", ".join(f"{h.name} ({', '.join(h.outputs)})" for h in split.plan.heads)
        print(f"wrote {split.bundle_dir}")
        if split.plan.identity_trunk:
            print(
                f"  boundary: none (the trunk passes {', '.join(split.plan.model_inputs)} on; --boundary TENSOR cuts)"
            )
        else:
            print(f"  boundary: {', '.join(split.manifest.trunk.outputs)}")
        print(f"  heads:    {heads}")
        print(f"  verified: max abs error {split.report.max_abs_error:.3g} over {split.report.samples} inputs")
    elif stage == "quantize" and result.quantization is not None:
        from exporter.quantize import format_report

        print(format_report(result.quantization))
    elif stage == "convert" and result.tflite is not None:
        from exporter.tflite import format_tflite_report

        print(format_tflite_report(result.tflite))


def _run_convert(args: argparse.Namespace) -> int:
    from exporter.tflite import TfliteOptions, backend_runs, convert_bundle, format_tflite_report

    precisions = ("fp32", "int8") if args.precision == "both" else (args.precision,)
    options = TfliteOptions(
        calib=args.calib,
        precisions=precisions,
        min_agreement=args.min_agreement,
        limit=args.limit,
        force=args.force,
        keep_unmeasured=args.keep_unmeasured,
    )
    if args.source_model:
        from exporter.litert_torch import convert_torch_bundle

        result = convert_torch_bundle(args.source_model, args.bundle, args.output, options)
    else:
        result = convert_bundle(args.bundle, args.output, options)
    print(format_tflite_report(result))
    print(f"wrote {result.bundle_dir}")

    lines, refused = backend_runs(result, precisions)
    print("\n".join(lines))
    if args.strict and refused:
        raise ConfigError(
            f"--strict: not every graph runs on LiteRT as asked: {' | '.join(refused)} "
            f"({result.bundle_dir} was written)"
        )
    return 0


def _run_quantize(args: argparse.Namespace) -> int:
    from exporter.quantize import format_report, quantize_bundle

    options = QuantizeOptions(
        calib=args.calib,
        precision=args.precision,
        min_agreement=args.min_agreement,
        held_out=args.held_out,
        limit=args.limit,
        force=args.force,
        keep_unmeasured=args.keep_unmeasured,
    )
    result = quantize_bundle(args.bundle, args.output, options)
    print(format_report(result))
    print(f"wrote {result.bundle_dir}")
    return 0


def _run_keygen(args: argparse.Namespace) -> int:
    from edge_runtime.trust.keys import generate_keypair, load_private_key, public_key_of

    private_path, public_path = generate_keypair(args.prefix, force=args.force)
    key_id = public_key_of(load_private_key(private_path)).key_id
    print(f"private key: {private_path}")
    print(f"public key:  {public_path}")
    print(f"key id:      {key_id}")
    print(f"keep {private_path} secret (never copy it to a device); give {public_path} to the devices")
    return 0


def _run_sign(args: argparse.Namespace) -> int:
    from exporter.signing import sign_result

    result = sign_result(args.bundle, args.key)
    print(f"signed {args.bundle} with key {result.key_id}")
    print(f"  signature: {result.path}")
    return 0


def _run_head_update(args: argparse.Namespace) -> int:
    from exporter.head_update import write_head_update

    result = write_head_update(args.bundle, base=args.base, output=args.output)
    print(f"packaged: {', '.join(result.included)}")
    for rel, size in result.kept_out:
        print(f"kept out (same as the base): {rel} ({size / 1e6:.2f} MB)")
    print(f"wrote {result.path} ({result.size / 1e6:.2f} MB)")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.bundle.summary import format_bundle

    if Path(args.bundle).is_file():
        from exporter.inspect_model import inspect_model

        print(inspect_model(args.bundle, input_spec=args.input_spec, suggest=args.suggest_head_spec), end="")
        return 0
    if args.suggest_head_spec or args.input_spec:
        raise ConfigError(f"{args.bundle}: --suggest-head-spec and --input-spec take a model file (.onnx)")
    print(format_bundle(load_bundle(args.bundle, warn_unchecked=False)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-export``; returns the process exit code. A user mistake is one
    line on stderr and exit code 2 (``-v`` adds the traceback, with the error's cause)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    from edge_runtime.bundle.reader import silence_unchecked_warning

    silence_unchecked_warning()  # the exporter writes and self-tests bundles; devices check signatures
    try:
        code: int = args.func(args)
        return code
    except EdgeRuntimeError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"edge-export: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-export: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
