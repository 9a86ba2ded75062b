# mypy: ignore-errors
# (runs inside the TensorFlow venv as a script; Keras objects carry no types here)
"""Driver run by :mod:`exporter.frontends.keras` inside the TensorFlow virtualenv (never imported
by the exporter itself: this environment has no TensorFlow).

``python _keras_driver.py JOB.json`` loads the Keras model named in the job, finds the trunk/head
boundary (given layer names, or the deepest layers every output depends on), builds the trunk
and head sub-models, converts each with ``tf.lite.TFLiteConverter.from_keras_model`` (FP32, and
full INT8 with a representative dataset: the trunk on the calibration frames, each head on the
float trunk's outputs for the same frames), runs the whole Keras model on the verification
frames, and writes ``result.json`` plus ``.tflite`` and ``.npy`` files next to it. Data goes in
and out as ``.npy`` / ``.json`` only. A user error is reported as ``{"error": {"kind", "message"}}``
in ``result.json`` with exit status 3.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


class UserError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def close(name, choices):
    found = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(repr(f) for f in found)}?)" if found else ""


def load(path):
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # zip/h5 errors, unknown classes: all mean "not a model we can load"
        raise UserError(
            "model", f"{Path(path).name}: not a Keras model Keras {keras.__version__} can load: {exc}"
        ) from None


def parents(layer):
    seen = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.input_tensors:
            parent = tensor._keras_history[0]
            if parent not in seen:
                seen.append(parent)
    return seen


def is_input(layer):
    return type(layer).__name__ == "InputLayer"


def ancestors(layer, stop=frozenset()):
    """Names of every layer ``layer`` depends on (itself included), not crossing ``stop``."""
    found, todo = {}, [layer]
    while todo:
        current = todo.pop()
        if current.name in found:
            continue
        found[current.name] = current
        if current.name in stop:
            continue
        todo.extend(parents(current))
    return found


def plan(model, boundary, groups):
    output_names = list(model.output_names)
    outputs = dict(zip(output_names, model.outputs, strict=True))
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    producers = {name: t._keras_history[0] for name, t in outputs.items()}
    if len(output_names) < 2:
        raise UserError("model", f"the model has {len(output_names)} output; a trunk/head split needs several")
    if len(model.inputs) != 1:
        raise UserError("model", f"the model has {len(model.inputs)} inputs; one image input is supported")
    names = [layer.name for layer in model.layers]
    if boundary is None:
        deps = {name: ancestors(producers[name]) for name in output_names}
        shared = set.intersection(*(set(d) for d in deps.values()))
        children = {}
        for name in output_names:
            for layer in deps[name].values():
                for parent in parents(layer):
                    children.setdefault(parent.name, set()).add(layer.name)
        cut = sorted(
            (n for n in shared if any(c not in shared for c in children.get(n, ()))), key=lambda n: order.get(n, -1)
        )
        direct = [n for n in cut if is_input(model.get_layer(n))]
        if direct or not cut:
            raise UserError(
                "model",
                "the outputs share no layer the heads could start from"
                + (" (a head reads the model input directly)" if direct else "")
                + "; give the trunk's last layer(s) with --boundary",
            )
        taken = [n for n in cut if n in output_names]
        if taken:
            raise UserError("model", f"output(s) {', '.join(taken)} are also used by other outputs; give --boundary")
        boundary, automatic = cut, True
    else:
        for name in boundary:
            if name not in names:
                raise UserError(
                    "config",
                    f"--boundary: no layer {name!r} in the model{close(name, names)}; "
                    f"layers: {', '.join(names[:40])}{' ...' if len(names) > 40 else ''}",
                )
            if len(getattr(model.get_layer(name), "_inbound_nodes", [])) > 1:
                raise UserError("config", f"--boundary: layer {name!r} is applied more than once; choose another")
        automatic = False
    # heads: explicit groups first, then one head per remaining output, named after it
    heads, used = {}, set()
    for head, outs in groups.items():
        for out in outs:
            if out not in outputs:
                raise UserError(
                    "config",
                    f"head {head!r}: no model output {out!r}{close(out, outputs)}; outputs: {', '.join(outputs)}",
                )
            if out in used:
                raise UserError("config", f"head {head!r}: output {out!r} is already in another head")
            used.add(out)
        heads[head] = list(outs)
    for out in output_names:
        if out not in used:
            heads[out] = [out]
    stop = frozenset(boundary)
    head_inputs = {}
    for head, outs in heads.items():
        needed = set()
        for out in outs:
            reach = ancestors(producers[out], stop)
            if producers[out].name in stop:
                raise UserError("config", f"output {out!r} is itself a boundary layer; choose layers before it")
            leaked = [n for n, layer in reach.items() if is_input(layer) and n not in stop]
            if leaked:
                raise UserError(
                    "config",
                    f"output {out!r} depends on the model input without passing through the boundary "
                    f"{', '.join(boundary)}; add the missing trunk layer to --boundary",
                )
            needed |= stop & set(reach)
        head_inputs[head] = [b for b in boundary if b in needed]
    unused = [b for b in boundary if not any(b in ins for ins in head_inputs.values())]
    if unused:
        raise UserError("config", f"--boundary: layer(s) {', '.join(unused)} feed no output")
    return list(boundary), automatic, heads, head_inputs, outputs


def build(model, boundary, heads, head_inputs, outputs):
    import keras

    tensors = {b: model.get_layer(b).output for b in boundary}
    trunk = keras.Model(model.inputs, {b: tensors[b] for b in boundary}, name="trunk")
    subs = {}
    for head, outs in heads.items():
        ins = head_inputs[head]
        inner = keras.Model([tensors[b] for b in ins], [outputs[o] for o in outs], name=f"{head}_inner")
        fresh = [keras.Input(shape=tuple(tensors[b].shape[1:]), dtype=tensors[b].dtype, name=b) for b in ins]
        result = inner(fresh if len(fresh) > 1 else fresh[0])
        if not isinstance(result, (list, tuple)):
            result = [result]
        subs[head] = keras.Model(fresh, dict(zip(outs, result, strict=True)), name=head)
    return trunk, subs


def convert(model, representative):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def main(job_path):
    job = json.loads(Path(job_path).read_text())
    out = Path(job["out"])
    try:
        import keras
        import tensorflow as tf

        model = load(job["model"])
        if not hasattr(model, "output_names") or not hasattr(model, "inputs"):
            raise UserError("model", f"{Path(job['model']).name}: a {type(model).__name__}, not a functional model")
        boundary, automatic, heads, head_inputs, outputs = plan(model, job["boundary"], job["groups"])
        trunk, subs = build(model, boundary, heads, head_inputs, outputs)
        input_layer = model.inputs[0]._keras_history[0].name
        files = {}
        calib = np.load(job["calib"]) if job.get("calib") else None
        features = None
        if calib is not None:
            features = [trunk(calib[i : i + 1], training=False) for i in range(len(calib))]
            features = [{k: np.asarray(v) for k, v in f.items()} for f in features]
        for graph, sub in [("trunk", trunk), *subs.items()]:
            for precision in job["precisions"]:
                rep = None
                if precision == "int8":
                    if graph == "trunk":

                        def rep():
                            for i in range(len(calib)):
                                yield [calib[i : i + 1].astype(np.float32)]

                    else:
                        ins = head_inputs[graph]

                        def rep(ins=ins):
                            for f in features:
                                yield [f[b].astype(np.float32) for b in ins]

                name = f"{graph}.{precision}.tflite"
                (out / name).write_bytes(convert(sub, rep))
                files.setdefault(graph, {})[precision] = name
        verify = np.load(job["verify"])
        predictions = model(verify, training=False)
        if isinstance(predictions, dict):
            predictions = [predictions[n] for n in model.output_names]
        elif not isinstance(predictions, (list, tuple)):
            predictions = [predictions]
        references = {}
        for i, (name, value) in enumerate(zip(model.output_names, predictions, strict=True)):
            np.save(out / f"reference_{i}.npy", np.asarray(value))
            references[name] = f"reference_{i}.npy"
        shapes = {}
        for b in boundary:
            shapes[b] = [None if d is None else int(d) for d in model.get_layer(b).output.shape]
        for name, tensor in outputs.items():
            shapes[name] = [None if d is None else int(d) for d in tensor.shape]
        result = {
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "input": {"name": input_layer, "shape": [None if d is None else int(d) for d in model.inputs[0].shape]},
            "outputs": list(model.output_names),
            "boundary": boundary,
            "automatic": automatic,
            "heads": {h: {"inputs": head_inputs[h], "outputs": outs} for h, outs in heads.items()},
            "files": files,
            "shapes": shapes,
            "references": references,
        }
    except UserError as exc:
        (out / "result.json").write_text(json.dumps({"error": {"kind": exc.kind, "message": str(exc)}}))
        return 3
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
