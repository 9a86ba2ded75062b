"""PyTorch frontend: an ``nn.Module`` → one multi-output ONNX model (+ its exact boundary).

When the module exposes ``trunk`` (a module) and ``heads`` (an ``nn.ModuleDict``), the
trunk's output is exported as named tensors (``features``, or ``features_0``… for a tuple,
or the keys of a dict) and used as the boundary, and each head's outputs are grouped under
its ``ModuleDict`` key: the split follows the author's structure, not a guess. Other
modules are exported as they are and split automatically.

Export uses the TorchScript-based exporter (readable tensor names, opset 17); weights are
kept inline, never in a separate ``.onnx.data`` file. torch is imported lazily: install
the ``[torch]`` extra (``torch==2.13.0``) to use this module.

Example::

    from exporter.frontends.torch import split_torch_model
    split_torch_model(MyNet(), "bundle", SplitOptions(input_spec={"shape": [1, 3, 128, 128]}))

CLI: ``edge-export split mypkg.models:build_model -o bundle --input-spec input.toml``
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from edge_runtime.errors import BackendUnavailableError, ConfigError, ModelError
from edge_runtime.specfiles import load_mapping_file
from exporter.pipeline import SplitOptions, SplitResult, split_model

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

EXPORT_OPSET = 17
BOUNDARY_NAME = "features"


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "PyTorch models need torch: pip install 'edge-runtime[torch]' (pins torch==2.13.0)"
        ) from exc
    return torch


@dataclass(frozen=True)
class TorchExport:
    """An exported module: the ONNX model, and the boundary and head grouping if known."""

    model: onnx.ModelProto
    boundary: tuple[str, ...] | None
    tasks: dict[str, tuple[str, ...]]


def load_torch_module(spec: str) -> torch.nn.Module:
    """Load a module from ``file.pt``/``.pth`` (TorchScript or a pickled module) or from
    ``package.module:callable`` / ``path/to/file.py:callable`` (called without arguments)."""
    torch = _import_torch()
    path = Path(spec)
    if path.suffix.lower() in (".pt", ".pth", ".ts", ".pt2") and ":" not in spec:
        if not path.is_file():
            raise ModelError(f"{path}: no such file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception:
            logger.debug("%s is not TorchScript; trying torch.load", path)
        try:
            # A pickled nn.Module needs full unpickling: only load files you trust.
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"{path}: not a PyTorch model file: {exc}") from exc
        if isinstance(obj, Mapping):
            raise ModelError(
                f"{path}: holds a state_dict (weights only), not a module; pass 'package.module:factory' "
                "that builds the model and loads these weights"
            )
        if not isinstance(obj, torch.nn.Module):
            raise ModelError(f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module")
        return obj
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"MODEL {spec!r}: expected an .onnx file, a .pt/.pth file, or 'module:callable' returning an nn.Module"
        )
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise ModelError(f"{file}: no such file")
            loader_spec = importlib.util.spec_from_file_location(file.stem, file)
            if loader_spec is None or loader_spec.loader is None:
                raise ModelError(f"{file}: cannot import it")
            mod = importlib.util.module_from_spec(loader_spec)
            sys.modules[file.stem] = mod
            loader_spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module_name)
    except ModelError:
        raise
    except ImportError as exc:
        raise ModelError(f"MODEL {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(mod, attr, None)
    if factory is None:
        raise ModelError(f"MODEL {spec!r}: {module_name!r} has no attribute {attr!r}")
    obj = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(obj, torch.nn.Module):
        raise ModelError(f"MODEL {spec!r}: returned a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _flatten(value: Any, prefix: str) -> list[tuple[str, Any]]:
    """Tensors of a module result with default names (dict keys when it is a dict)."""
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return [(prefix, value[0])]
        return [(f"{prefix}_{i}", v) for i, v in enumerate(value)]
    return [(prefix, value)]


def export_torch_module(module: torch.nn.Module, input_shape: list[int], input_name: str = "image") -> TorchExport:
    """Export ``module`` (eval mode, dynamic batch) to an in-memory ONNX model."""
    torch = _import_torch()
    module = module.eval()
    trunk: Any = getattr(module, "trunk", None)
    heads: Any = getattr(module, "heads", None)
    structured = isinstance(trunk, torch.nn.Module) and isinstance(heads, torch.nn.ModuleDict)
    captured: dict[str, Any] = {}
    hooks = []
    if structured:
        hooks.append(trunk.register_forward_hook(lambda _m, _i, out: captured.__setitem__("trunk", out)))
        for name, head in heads.items():
            hooks.append(
                head.register_forward_hook(lambda _m, _i, out, _n=name: captured.__setitem__(f"head:{_n}", out))
            )

    names: dict[str, list[str]] = {}

    class _Exposed(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: Any) -> tuple[Any, ...]:
            captured.clear()
            raw = self.inner(x)
            result = _flatten(raw, "output")
            outputs = [t for _, t in result]
            out_names = [n for n, _ in result]
            boundary: list[tuple[str, Any]] = []
            if structured and "trunk" in captured:
                boundary = _flatten(captured["trunk"], BOUNDARY_NAME)
                owners = {
                    id(t): key[5:]
                    for key, value in captured.items()
                    if key.startswith("head:")
                    for _, t in _flatten(value, key)
                }
                per_head: dict[str, list[int]] = {}
                for i, t in enumerate(outputs):
                    if id(t) in owners:
                        per_head.setdefault(owners[id(t)], []).append(i)
                one_each = len(per_head) == len(outputs) and all(len(v) == 1 for v in per_head.values())
                if one_each and not isinstance(raw, Mapping):
                    for head_name, idxs in per_head.items():
                        out_names[idxs[0]] = head_name
                names["tasks"] = [f"{h}={','.join(str(i) for i in idxs)}" for h, idxs in per_head.items()]
            names["outputs"] = out_names
            names["boundary"] = [n for n, _ in boundary]
            return (*outputs, *(t for _, t in boundary))

    example = torch.randn(*input_shape)
    wrapper = _Exposed().eval()
    with torch.no_grad():
        wrapper(example)  # discover output and boundary names
    out_names = list(names["outputs"])
    boundary_names = list(names["boundary"])
    clash = set(out_names) & set(boundary_names)
    if clash:
        boundary_names = [f"trunk_{n}" for n in boundary_names]
    buffer = io.BytesIO()
    all_names = [*out_names, *boundary_names]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                dynamo=False,
                opset_version=EXPORT_OPSET,
                input_names=[input_name],
                output_names=all_names,
                dynamic_axes={n: {0: "batch"} for n in [input_name, *all_names]},
            )
    except Exception as exc:
        raise ModelError(f"torch.onnx.export failed: {exc}") from exc
    finally:
        for hook in hooks:
            hook.remove()
    model = onnx.load_from_string(buffer.getvalue())
    tasks: dict[str, tuple[str, ...]] = {}
    boundary: tuple[str, ...] | None = None
    if boundary_names:
        kept = [o for o in model.graph.output if o.name not in set(boundary_names)]
        del model.graph.output[:]
        model.graph.output.extend(kept)
        boundary = tuple(boundary_names)
        for entry in names.get("tasks", []):
            head_name, _, idxs = entry.partition("=")
            tasks[head_name] = tuple(out_names[int(i)] for i in idxs.split(","))
        logger.info("torch: using the module's own boundary (%s) and heads (%s)", ", ".join(boundary), ", ".join(tasks))
    return TorchExport(model=model, boundary=boundary, tasks=tasks)


def split_torch_model(module_or_spec: torch.nn.Module | str, out_dir: str | Path, options: SplitOptions) -> SplitResult:
    """Export a PyTorch model to ONNX and split it like :func:`exporter.pipeline.split_model`.

    The input shape comes from ``options.input_spec`` (its ``shape`` key is required).
    """
    _import_torch()
    spec: Mapping[str, Any]
    if options.input_spec is None:
        raise ConfigError("a PyTorch model needs --input-spec with the input 'shape' (e.g. [1, 3, 224, 224])")
    spec = options.input_spec if isinstance(options.input_spec, Mapping) else load_mapping_file(options.input_spec)
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(f"{options.input_spec}: 'shape' must list the input size, e.g. [1, 3, 224, 224]")
    if isinstance(module_or_spec, str):
        module, source = load_torch_module(module_or_spec), Path(module_or_spec.split(":")[0]).stem
    else:
        module, source = module_or_spec, type(module_or_spec).__name__
    exported = export_torch_module(module, shape, str(spec.get("name", "image")))
    tasks = {**exported.tasks, **dict(options.tasks)} if options.head_spec is None else dict(options.tasks)
    merged = replace(
        options,
        tasks=tasks,
        boundary=options.boundary or exported.boundary,
        input_spec={**spec, "name": spec.get("name", "image")},
    )
    return split_model(exported.model, out_dir, merged, source_name=f"{source}.onnx")
