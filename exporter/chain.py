"""``edge-export split`` with ``--precision`` and ``--formats`` as one Python call: model → bundle.

The frontend is chosen from the model's content (:mod:`exporter.model_format`, not its suffix):
ONNX; TFLite (imported to ONNX with tflite2onnx, :mod:`exporter.frontends.tflite`); PyTorch
``.pt``/``.pth`` or ``module:callable``; Keras ``.keras``/``.h5`` (a TFLite-only bundle). Then the
chain runs split → quantize (when
``precision`` is not fp32) → convert to TFLite (when ``formats`` has tflite). Each stage logs its
numbered steps (:mod:`exporter.progress`); ``progress`` is called after each stage with its
name and the result so far.

Example::

    from exporter import ExportOptions, SplitOptions, export
    result = export("examples/demo_multitask.onnx", "build/demo_bundle",
                    ExportOptions(split=SplitOptions(input_spec="examples/demo_input.toml",
                                                     head_spec="examples/demo_heads.toml", force=True),
                                  precision="int8"))
    print(result.bundle_dir, [d.accepted for d in result.quantization.decisions])

CLI: ``edge-export split examples/demo_multitask.onnx -o build/demo_bundle --precision int8``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.errors import ConfigError, ModelError
from exporter.bundle import staged_output
from exporter.pipeline import SplitOptions, SplitResult, split_model
from exporter.quantize_options import DEFAULT_MIN_AGREEMENT, QuantizeOptions, check_min_agreement

if TYPE_CHECKING:
    from exporter.frontends.keras import KerasSplitResult
    from exporter.quantize import QuantizeResult
    from exporter.tflite import TfliteResult

#: The stages, in the order they run; ``progress`` gets one of these names.
STAGES = ("split", "quantize", "convert")


@dataclass(frozen=True)
class ExportOptions:
    """Options of :func:`export` (the flags of ``edge-export split``).

    ``precision``: fp32 (split only), or int8 / fp16 / mixed to quantize after splitting;
    ``formats``: ``"onnx"`` (the default) or ``"onnx,tflite"`` (a string or a sequence); a Keras
    model gives a TFLite-only bundle (``"tflite"``, the default for it); ``min_agreement``: the
    fidelity gate per task for quantized and converted graphs."""

    split: SplitOptions = field(default_factory=SplitOptions)
    precision: str = "fp32"
    formats: str | Sequence[str] | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT

    def __post_init__(self) -> None:
        check_min_agreement(self.min_agreement)  # checked even when no stage after the split uses it


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote: the bundle, and what each stage that ran returned (None for a
    stage that did not run; ``split`` is None and ``keras`` set for a Keras model)."""

    bundle_dir: Path
    formats: tuple[str, ...]
    split: SplitResult | None = None
    keras: KerasSplitResult | None = None
    quantization: QuantizeResult | None = None
    tflite: TfliteResult | None = None


def _formats(given: str | Sequence[str] | None, keras: bool) -> tuple[str, ...]:
    text = given if given is None or isinstance(given, str) else ",".join(given)
    formats = tuple(f.strip() for f in (text or "onnx").split(",") if f.strip())
    if keras:
        return ("tflite",) if given is None else formats  # Keras bundles are TFLite-only
    if [f for f in formats if f not in ("onnx", "tflite")] or "onnx" not in formats:
        raise ConfigError(f"--formats {given!r}: give onnx, or onnx,tflite (ONNX is what the split writes)")
    return formats


def _check_model_path(model: str) -> None:
    if ":" not in model:
        path = Path(model)
        if not path.exists():
            raise ModelError(f"{path}: no such file")
        if not path.is_file():
            raise ModelError(
                f"{path}: not a file (MODEL is an .onnx, .tflite, .pt/.pth, .keras/.h5 file, or module:callable)"
            )


def export(
    model: str | Path,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    progress: Callable[[str, ExportResult], None] | None = None,
) -> ExportResult:
    """Split ``model`` (ONNX, TFLite, PyTorch or Keras) into a verified bundle at ``out_dir``, then
    quantize and convert it as ``options`` asks; returns what each stage wrote and decided."""
    from exporter.model_format import guess_format

    options = options or ExportOptions()
    model = str(model)
    # The options are checked before the file is read in earnest (its suffix decides when its
    # content does not); the stages then route by content (detect_format).
    keras = guess_format(model) == "keras"
    formats = _formats(options.formats, keras)
    if keras:
        _check_keras_options(options, formats)
    quantize = None
    if options.precision != "fp32":
        quantize = QuantizeOptions(
            calib=options.split.calib, precision=options.precision, min_agreement=options.min_agreement
        )
    _check_model_path(model)
    final = Path(out_dir).resolve()
    # Every stage works in one staging directory: the bundle appears at out_dir only when the
    # whole chain succeeded (a failed quantize or convert leaves nothing, not a split bundle).
    with staged_output(out_dir, options.split.force) as staging:
        staged = replace(options, split=replace(options.split, force=True))
        report = None
        if progress is not None:
            callback = progress

            def report(stage: str, result: ExportResult) -> None:
                callback(stage, _relocated(result, staging, final))

        result = _export_stages(model, staging, staged, formats, quantize, report)
    return _relocated(result, staging, final)


def _relocated(result: ExportResult, staging: Path, final: Path) -> ExportResult:
    """``result`` with every path to the staging directory pointing at the final one."""

    def moved(obj: object) -> object:
        if obj is not None and getattr(obj, "bundle_dir", None) == staging:
            return replace(obj, bundle_dir=final)  # type: ignore[type-var]
        return obj

    return replace(
        result,
        bundle_dir=final,
        split=moved(result.split),  # type: ignore[arg-type]
        keras=moved(result.keras),  # type: ignore[arg-type]
        quantization=moved(result.quantization),  # type: ignore[arg-type]
        tflite=moved(result.tflite),  # type: ignore[arg-type]
    )


def _export_stages(
    model: str,
    out_dir: Path,
    options: ExportOptions,
    formats: tuple[str, ...],
    quantize: QuantizeOptions | None,
    progress: Callable[[str, ExportResult], None] | None,
) -> ExportResult:
    """The stages of :func:`export`, writing to ``out_dir``."""
    from exporter.model_format import detect_format

    kind = detect_format(model)
    if kind == "keras":
        return _export_keras(model, out_dir, options, formats, progress)
    if kind == "onnx":
        split = split_model(model, out_dir, options.split)
    elif kind == "tflite":  # imported to ONNX (tflite2onnx), then the ONNX split
        from exporter.frontends.tflite import split_tflite_model

        split = split_tflite_model(model, out_dir, options.split)
    else:
        from exporter.frontends.torch import split_torch_model

        split = split_torch_model(model, out_dir, options.split)
    result = ExportResult(bundle_dir=split.bundle_dir, formats=formats, split=split)
    if progress is not None:
        progress("split", result)
    if quantize is not None:
        from exporter.quantize import quantize_bundle

        result = replace(result, quantization=quantize_bundle(result.bundle_dir, options=quantize))
        if progress is not None:
            progress("quantize", result)
    if "tflite" in formats:
        from exporter.tflite import TfliteOptions, convert_bundle

        tflite = TfliteOptions(
            calib=options.split.calib,
            precisions=("fp32", "int8") if options.precision in ("int8", "mixed") else ("fp32",),
            min_agreement=options.min_agreement,
        )
        if kind in ("onnx", "tflite"):  # the bundle's ONNX graphs, with onnx2tf
            converted = convert_bundle(result.bundle_dir, options=tflite)
        else:  # a PyTorch model: litert-torch converts its own trunk and heads
            from exporter.litert_torch import convert_torch_bundle

            converted = convert_torch_bundle(model, result.bundle_dir, options=tflite)
        result = replace(result, tflite=converted)
        if progress is not None:
            progress("convert", result)
    return result


def _check_keras_options(options: ExportOptions, formats: tuple[str, ...]) -> None:
    """What a Keras model cannot give: ONNX, or precisions other than fp32 / int8."""
    if formats != ("tflite",):
        raise ConfigError(
            f"--formats {options.formats!r}: Keras bundles are TFLite-only (no Keras -> ONNX path); "
            "leave --formats out or give --formats tflite"
        )
    if options.precision not in ("fp32", "int8"):
        raise ConfigError(f"--precision {options.precision}: a Keras model exports fp32, or int8 (with fp32)")


def _export_keras(
    model: str,
    out_dir: str | Path,
    options: ExportOptions,
    formats: tuple[str, ...],
    progress: Callable[[str, ExportResult], None] | None,
) -> ExportResult:
    """A Keras model: trunk + heads straight to TFLite in the TensorFlow venv."""
    from exporter.frontends.keras import KerasSplitOptions, split_keras_model
    from exporter.tflite import TfliteResult

    _check_keras_options(options, formats)
    split = options.split
    keras = split_keras_model(
        model,
        out_dir,
        KerasSplitOptions(
            boundary=split.boundary,
            tasks=split.tasks,
            input_spec=split.input_spec,
            head_spec=split.head_spec,
            calib=split.calib,
            int8=options.precision == "int8",
            min_agreement=options.min_agreement,
            tolerance=split.tolerance,
            force=split.force,
            name=split.name,
            version=split.version,
        ),
    )
    result = ExportResult(bundle_dir=keras.bundle_dir, formats=formats, keras=keras)
    if progress is not None:
        progress("split", result)
    if keras.decisions:
        result = replace(result, tflite=TfliteResult(keras.bundle_dir, keras.decisions, "held-back frames"))
        if progress is not None:
            progress("convert", result)
    return result


__all__ = ["STAGES", "ExportOptions", "ExportResult", "export"]
