"""A human-readable table of a bundle: graphs, boundary tensors, artifacts and sizes.

Shared by ``edge-export inspect`` and ``edge-runtime inspect``::

    print(format_bundle(load_bundle("build/demo_bundle")))
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_runtime.bundle.reader import Bundle
from edge_runtime.bundle.specs import DEFAULT_PAD_VALUE, InputSpec


def _size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} MiB"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "\n".join(lines)


def _shape(bundle: Bundle, name: str) -> str:
    info = bundle.manifest.tensors.get(name)
    if info is None:
        return name
    dims = "?" if info.shape is None else "x".join(str(d) for d in info.shape)
    return f"{name} {info.dtype}[{dims}]"


def _input_lines(spec: InputSpec) -> list[str]:
    """The ``input`` line, its padding when not the default, and what was assumed at export."""
    pad = ""
    if spec.resize == "letterbox" and (spec.pad_value != DEFAULT_PAD_VALUE or spec.pad_position != "center"):
        pad = f" pad={spec.pad_value:g} {spec.pad_position}"
    lines = [
        f"input    {spec.name} {spec.dtype}{list(spec.shape)} {spec.layout} {spec.color} resize={spec.resize}{pad}"
        f"{' dynamic-batch' if spec.dynamic_batch else ''}"
    ]
    if spec.assumed:
        lines.append(
            f"         preprocessing ASSUMED: {', '.join(spec.assumed)} "
            "(no input spec or model metadata stated them at export)"
        )
    return lines


def format_bundle(bundle: Bundle) -> str:
    """The summary table ``inspect`` prints."""
    m = bundle.manifest
    lines = [
        f"bundle   {bundle.root}",
        f"name     {m.name} v{m.version}  ({m.format}, {m.exporter}, {m.created})",
        *_input_lines(m.input),
        f"boundary {', '.join(_shape(bundle, t) for t in m.trunk.outputs)}",
        "",
    ]
    rows = []
    total = 0
    for name, entry in m.graphs().items():
        artifacts = []
        for art in entry.artifacts:
            size = bundle.size_of(art) if bundle.path_of(art).exists() else 0
            total += size
            artifacts.append(f"{art.format}/{art.precision} {_size(size)}")
        decoder = entry.decoder.type if entry.decoder is not None else "-"
        schedule = f"every {entry.schedule.every_n_frames}" if entry.schedule is not None else "every frame"
        if entry.schedule is not None and entry.schedule.when:
            schedule += f" when {entry.schedule.when.get('head')}"
        rows.append(
            [
                name if name == "trunk" else f"head:{name}",
                ", ".join(entry.inputs),
                ", ".join(entry.outputs),
                decoder,
                schedule,
                "; ".join(artifacts),
            ]
        )
    lines.append(format_table(["graph", "inputs", "outputs", "decoder", "schedule", "artifacts"], rows))
    lines.append("")
    lines.append(f"total    {_size(total)} in {len(m.files)} files (sha256 verified)")
    verification = m.split.get("verification")
    if isinstance(verification, dict):
        lines.append(
            f"verified {verification.get('samples')} inputs, max abs error "
            f"{verification.get('max_abs_error'):.3g} (tolerance {verification.get('tolerance'):g})"
        )
    return "\n".join(lines)
