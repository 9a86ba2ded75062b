"""TFLite artifacts for a bundle made from a PyTorch model: the trunk and each head converted
with ``litert-torch`` (in its own virtualenv, run as a subprocess), FP32 and
full INT8, measured against the bundle's float ONNX graphs behind the same gate as
:mod:`exporter.tflite` (:mod:`exporter.gate`).

The model is the one :func:`exporter.frontends.torch.split_torch_model` split (an
``nn.Module`` with ``trunk`` and a ``heads`` ``ModuleDict``, or a ``.pt``/``.pth`` file or
``module:callable`` giving one). In this process each graph is captured with
``torch.export`` (batch 1) and saved as a ``.pt2`` program; calibration tensors go to ``.npy``
files. The driver in the litert-torch venv converts each program to FP32 TFLite, and to INT8
with litert-torch's PT2E quantizer (per-channel weights, per-tensor int8 activations), the
trunk calibrated on the frames and each head on the float trunk's outputs: every
calibration frame goes through the observers, whose activation ranges are min/max (the
default histogram observer clips the trunk's features, which then saturate). litert-torch
keeps the PyTorch layout (NCHW): every tensor's ``perm`` is None; the signature's inputs
(``args_0``…) and outputs are mapped to the logical names in the manifest.

Example::

    from exporter.litert_torch import convert_torch_bundle
    convert_torch_bundle(MyNet(), "bundle", options=TfliteOptions(calib="frames/"))

CLI: ``edge-export convert bundle --to tflite --source-model mypkg.models:build --calib frames/``
(or ``edge-export split mypkg.models:build -o bundle --formats onnx,tflite ...``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import ConfigError, ModelError
from exporter.frontends.torch import BOUNDARY_NAME, _flatten, _import_torch, load_torch_module
from exporter.tflite import TfliteOptions, TfliteResult, convert_bundle
from exporter.tflite_graphs import (
    ConversionInputs,
    TfliteConverter,
    TfliteGraph,
    onnx_io_shapes,
    signature_details,
    signature_runner,
    tensor_info,
)
from exporter.toolenv import ToolEnv, ensure_env
from exporter.verify import make_session

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TOOL = "litert-torch"
#: Activation observer of the INT8 calibration: "minmax" (default) or "histogram" (litert-torch's).
OBSERVERS = ("minmax", "histogram")

DRIVER = r'''
"""Runs in the litert-torch venv: convert .pt2 programs to TFLite (FP32 / PT2E INT8)."""
import json
import sys

import numpy as np
import torch


def quantizer_for(observer):
    from litert_torch.quantize import pt2e_quantizer as q

    config = q.get_symmetric_quantization_config(is_per_channel=True)
    if observer == "minmax":
        import dataclasses

        from torchao.quantization.pt2e import MinMaxObserver

        act = config.input_activation
        act = dataclasses.replace(act, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        out = dataclasses.replace(config.output_activation, observer_or_fake_quant_ctr=act.observer_or_fake_quant_ctr)
        config = dataclasses.replace(config, input_activation=act, output_activation=out)
    return q.PT2EQuantizer().set_global(config)


def main(job_path):
    import litert_torch
    from litert_torch.quantize import quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    job = json.loads(open(job_path).read())
    for graph in job["graphs"]:
        arrays = [np.load(p) for p in graph["calib"]]
        sample = tuple(torch.from_numpy(a[:1]) for a in arrays)
        program = torch.export.load(graph["program"])
        if "fp32" in graph["out"]:
            litert_torch.convert(program.module(), sample).export(graph["out"]["fp32"])
            print(json.dumps({"graph": graph["name"], "precision": "fp32"}), flush=True)
        if "int8" in graph["out"]:
            quantizer = quantizer_for(job["observer"])
            prepared = quantize_pt2e.prepare_pt2e(program.module(), quantizer)
            with torch.no_grad():
                for i in range(len(arrays[0])):  # every calibration frame, one at a time
                    prepared(*(torch.from_numpy(a[i : i + 1]) for a in arrays))
            converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
            config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
            litert_torch.convert(converted, sample, quant_config=config).export(graph["out"]["int8"])
            print(json.dumps({"graph": graph["name"], "precision": "int8"}), flush=True)


main(sys.argv[1])
'''


def convert_torch_bundle(
    model: torch.nn.Module | str,
    bundle_dir: str | Path,
    out_dir: str | Path | None = None,
    options: TfliteOptions | None = None,
    *,
    observer: str = "minmax",
) -> TfliteResult:
    """Add litert-torch TFLite artifacts (FP32, and INT8 where it passes the gate) to the bundle
    that :func:`~exporter.frontends.torch.split_torch_model` made from ``model``."""
    if observer not in OBSERVERS:
        raise ConfigError(f"observer {observer!r}: choose from {', '.join(OBSERVERS)}")
    _import_torch()
    module = load_torch_module(model) if isinstance(model, str) else model
    layout = load_bundle(bundle_dir).manifest.input.layout or "NCHW"

    def convert(env: ToolEnv, job: ConversionInputs) -> dict[tuple[str, str], TfliteGraph]:
        return _litert_graphs(module, env, job, observer)

    converter = TfliteConverter(name=TOOL, layout=layout, prepare=lambda: ensure_env(TOOL), convert=convert)
    return convert_bundle(bundle_dir, out_dir, options, converter=converter)


# -- the graphs as torch programs ------------------------------------------------------------------


def _structure(module: Any) -> tuple[Any, Mapping[str, Any]]:
    torch = _import_torch()
    trunk, heads = getattr(module, "trunk", None), getattr(module, "heads", None)
    if not isinstance(trunk, torch.nn.Module) or not isinstance(heads, torch.nn.ModuleDict):
        raise ConfigError(
            "litert-torch conversion needs the model's own split: a 'trunk' module and a 'heads' nn.ModuleDict "
            "(convert other models from their ONNX bundle with onnx2tf: edge-export convert BUNDLE --to tflite)"
        )
    return trunk, heads


def _trunk_names(value: Any, expected: Sequence[str]) -> list[str]:
    """The trunk's outputs by manifest name, as the torch frontend named them."""
    names = [n for n, _ in _flatten(value, BOUNDARY_NAME)]
    for candidate in (names, [f"trunk_{n}" for n in names]):
        if set(candidate) == set(expected):
            return candidate
    raise ModelError(f"the trunk's outputs {names} are not the bundle's boundary {list(expected)}: another model?")


def _capture(module: Any, frame: np.ndarray) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
    """Run the model once; return its input tensor, the trunk's output and each head's call
    (args, kwargs)."""
    torch = _import_torch()
    trunk, heads = _structure(module)
    seen: dict[str, Any] = {}
    calls: dict[str, tuple[Any, Any]] = {}
    hooks = [trunk.register_forward_hook(lambda _m, _i, out: seen.__setitem__("trunk", out))]
    for name, head in heads.items():
        hooks.append(
            head.register_forward_pre_hook(
                lambda _m, args, kwargs, _n=name: calls.__setitem__(_n, (args, kwargs)), with_kwargs=True
            )
        )
    x = torch.from_numpy(frame)
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    if "trunk" not in seen:
        raise ModelError("the model's forward did not call its trunk")
    return x, seen["trunk"], calls


def _trunk_program(trunk: Any, names: list[str]) -> Any:
    torch = _import_torch()

    class _Trunk(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.inner = trunk

        def forward(self, x: Any) -> dict[str, Any]:
            return {n: t for n, (_, t) in zip(names, _flatten(self.inner(x), BOUNDARY_NAME), strict=True)}

    return _Trunk().eval()


def _head_program(head: Any, call: tuple[Any, Any], by_id: Mapping[int, str]) -> tuple[Any, list[str]]:
    """A module taking the head's tensors (those of the trunk's output / the model input that the
    model passed it) positionally; and their logical names, in that order."""
    torch = _import_torch()
    from torch.utils import _pytree as pytree

    leaves, spec = pytree.tree_flatten(call)
    slots: list[int | None] = []
    used: list[str] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            name = by_id.get(id(leaf))
            if name is None:
                raise ModelError(
                    "a head is called with a tensor that is neither a trunk output nor the model input; "
                    "litert-torch conversion feeds heads by those names only"
                )
            if name not in used:
                used.append(name)
            slots.append(used.index(name))
        else:
            slots.append(None)

    class _Head(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.inner = head

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            filled = [leaf if slot is None else tensors[slot] for leaf, slot in zip(leaves, slots, strict=True)]
            args, kwargs = pytree.tree_unflatten(filled, spec)
            return tuple(t for _, t in _flatten(self.inner(*args, **kwargs), "output"))

    return _Head().eval(), used


def _match_outputs(torch_outs: Sequence[np.ndarray], onnx_outs: Mapping[str, np.ndarray], head: str) -> list[str]:
    """The ONNX name of each torch output of a head, by shape and value."""
    names: list[str] = []
    for value in torch_outs:
        fits = [
            (float(np.max(np.abs(ref - value))) if ref.size else 0.0, name)
            for name, ref in onnx_outs.items()
            if name not in names and ref.shape == value.shape
        ]
        if not fits or min(fits)[0] > 1e-3 * (1.0 + float(np.max(np.abs(value)))):
            raise ModelError(f"head {head!r}: a torch output {list(value.shape)} matches no output of its ONNX graph")
        names.append(min(fits)[1])
    if sorted(names) != sorted(onnx_outs):
        raise ModelError(f"head {head!r}: torch outputs {names} do not cover its ONNX outputs {list(onnx_outs)}")
    return names


# -- converting and mapping back -------------------------------------------------------------------


def _litert_graphs(
    module: Any, env: ToolEnv, job: ConversionInputs, observer: str
) -> dict[tuple[str, str], TfliteGraph]:
    torch = _import_torch()
    trunk, heads = _structure(module)
    entries = dict(job.graphs)
    probe = job.calib_values[0]
    x, trunk_out, calls = _capture(module, probe[job.input_name])
    trunk_names = _trunk_names(trunk_out, entries["trunk"].outputs)
    by_id = {id(x): job.input_name}  # a head may read the model input too
    by_id.update({id(t): n for n, (_, t) in zip(trunk_names, _flatten(trunk_out, BOUNDARY_NAME), strict=True)})
    work = job.workdir / "litert"
    work.mkdir()
    plans: dict[str, tuple[Any, list[str], list[str]]] = {
        "trunk": (_trunk_program(trunk, trunk_names), [job.input_name], trunk_names)
    }
    for name, head in heads.items():
        if name not in entries:
            raise ModelError(f"the model's head {name!r} is not in the bundle (heads: {', '.join(entries)})")
        if name not in calls:
            raise ModelError(f"the model's forward did not call head {name!r}")
        program, inputs = _head_program(head, calls[name], by_id)
        with torch.no_grad():
            outs = program(*(torch.from_numpy(probe[i]) for i in inputs))
        session = make_session(job.paths[name].read_bytes(), f"head {name} fp32")
        onnx_outs = dict(
            zip(
                entries[name].outputs,
                session.run(list(entries[name].outputs), {i: probe[i] for i in entries[name].inputs}),
                strict=True,
            )
        )
        plans[name] = (program, inputs, _match_outputs([o.numpy() for o in outs], onnx_outs, name))
    spec: dict[str, Any] = {"observer": observer, "graphs": []}
    for graph, (program, inputs, _outputs) in plans.items():
        calib = []
        for i, name in enumerate(inputs):
            path = work / f"{graph}.in{i}.npy"
            np.save(path, np.concatenate([v[name] for v in job.calib_values]).astype(np.float32))
            calib.append(str(path))
        sample = tuple(torch.from_numpy(job.calib_values[0][n]) for n in inputs)
        exported = torch.export.export(program, sample)
        torch.export.save(exported, str(work / f"{graph}.pt2"))
        spec["graphs"].append(
            {
                "name": graph,
                "program": str(work / f"{graph}.pt2"),
                "calib": calib,
                "out": {p: str(work / f"{graph}.{p}.tflite") for p in job.precisions},
            }
        )
    (work / "job.json").write_text(json.dumps(spec, indent=1))
    (work / "litert_driver.py").write_text(DRIVER)
    logger.info("      litert-torch: %s (%s)", ", ".join(plans), " + ".join(p.upper() for p in job.precisions))
    env.run(["litert_driver.py", "job.json"], cwd=work, what="litert-torch conversion")
    converted: dict[tuple[str, str], TfliteGraph] = {}
    for graph, (_program, inputs, outputs) in plans.items():
        for precision in job.precisions:
            path = work / f"{graph}.{precision}.tflite"
            if not path.exists():
                logger.warning("%s: litert-torch wrote no %s model", graph, precision)
                continue
            converted[(graph, precision)] = load_litert(path, inputs, outputs, job.models[graph])
    return converted


_ARG = re.compile(r"args_(\d+)$")
_OUT = re.compile(r"output_(\d+)$")


def load_litert(path: Path, inputs: Sequence[str], outputs: Sequence[str], model: onnx.ModelProto) -> TfliteGraph:
    """Load a litert-torch graph and map its signature (``args_0``…, ``output_0``… in the order of
    ``inputs`` / ``outputs``, or the logical names themselves) to the logical names. The layout
    is the PyTorch one: each shape must equal the ONNX one (batch aside), ``perm`` None."""
    runner = signature_runner(path)
    in_details, out_details = signature_details(runner)
    shapes = onnx_io_shapes(model)
    tensors: dict[str, dict[str, Any]] = {}
    for names, details, pattern in ((inputs, in_details, _ARG), (outputs, out_details, _OUT)):
        positional = {int(m.group(1)): key for key in details if (m := pattern.match(key))}
        for i, name in enumerate(names):
            key = name if name in details else positional.get(i)
            if key is None:
                raise ModelError(f"{path.name}: no signature tensor for {name!r} (has {', '.join(details)})")
            shape, expected = list(details[key]["shape"]), shapes.get(name)
            if expected is not None and (
                len(expected) != len(shape) or any(e not in (None, s) for e, s in zip(expected, shape, strict=True))
            ):
                raise ModelError(f"{path.name}: {name!r} is {shape} in TFLite but {expected} in ONNX")
            tensors[name] = tensor_info(details[key], key, None)
    return TfliteGraph(path, tensors, list(inputs), list(outputs), runner)


__all__ = ["OBSERVERS", "convert_torch_bundle", "load_litert"]
