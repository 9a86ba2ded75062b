"""The MTCNN O-Net zoo entry without the network: the torchvision stub's NMS against a plain
reference, the O-Net module (structure, the package's state-dict keys, shapes), its split with the
committed specs, and the comparison arithmetic of ``zoo/mtcnn.py``. With the package's weights in
the zoo cache (``zoo/mtcnn.py`` extracts them), the real O-Net is checked too."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the O-Net module needs the [torch] extra (torch==2.13.0)")

from edge_runtime.bundle.reader import load_bundle  # noqa: E402
from exporter.frontends.torch import split_torch_model  # noqa: E402
from exporter.pipeline import SplitOptions  # noqa: E402
from zoo import onet_model  # noqa: E402
from zoo.mtcnn import CROP, compare, landmarks_px, replay_error  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "zoo" / "torchvision_stub" / "torchvision"
SPECS = ROOT / "examples" / "zoo" / "mtcnn-onet"
# The package's O-Net state-dict keys (facenet_pytorch/data/onet.pt) and shapes
PACKAGE_KEYS = {
    "conv1": (32, 3, 3, 3),
    "prelu1": (32,),
    "conv2": (64, 32, 3, 3),
    "prelu2": (64,),
    "conv3": (64, 64, 3, 3),
    "prelu3": (64,),
    "conv4": (128, 64, 2, 2),
    "prelu4": (128,),
    "dense5": (256, 1152),
    "prelu5": (256,),
    "dense6_1": (2, 256),
    "dense6_2": (4, 256),
    "dense6_3": (10, 256),
}


def _stub(name: str) -> ModuleType:
    """A stub module loaded by path under a private name (``import torchvision`` stays untouched)."""
    spec = importlib.util.spec_from_file_location(f"_mtcnn_stub_{name}", STUB / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook hard NMS (torchvision's definition: areas without +1, suppress IoU > threshold)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = w * h
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def _random_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.permutation(n).astype(np.float32) / n


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_stub_nms_matches_the_reference(threshold: float) -> None:
    boxes, scores = _random_boxes(np.random.default_rng(0), 300)
    keep = _stub("ops/boxes.py").nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    assert keep.dtype == torch.int64
    assert keep.tolist() == _reference_nms(boxes.astype(np.float64), scores, threshold)


@pytest.mark.parametrize("n", [120, 1500])  # coordinate trick (<= 4000 numbers), one NMS per category
def test_stub_batched_nms_keeps_categories_apart(n: int) -> None:
    rng = np.random.default_rng(n)
    boxes, scores = _random_boxes(rng, n)
    idxs = rng.integers(0, 3, n)
    boxes_t, scores_t = torch.from_numpy(boxes), torch.from_numpy(scores)
    keep = _stub("ops/boxes.py").batched_nms(boxes_t, scores_t, torch.from_numpy(idxs), 0.5).tolist()
    want: list[int] = []
    for c in range(3):
        members = np.flatnonzero(idxs == c)
        want += [int(members[k]) for k in _reference_nms(boxes[members].astype(np.float64), scores[members], 0.5)]
    assert sorted(keep) == sorted(want)
    assert keep == sorted(keep, key=lambda i: -scores[i])  # decreasing score
    assert _stub("ops/boxes.py").nms(boxes_t[:0], scores_t[:0], 0.5).shape == (0,)


def test_stub_to_tensor_is_torchvision_s() -> None:
    functional = _stub("transforms/functional.py")
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = functional.to_tensor(image)
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), image.transpose(2, 0, 1) / 255, rtol=1e-6)
    floats = np.float32(image)
    assert torch.equal(functional.to_tensor(floats), torch.from_numpy(floats.transpose(2, 0, 1)))


def _package_state(seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    for layer, shape in PACKAGE_KEYS.items():
        state[f"{layer}.weight"] = torch.randn(*shape, generator=generator) * 0.05
        if not layer.startswith("prelu"):
            state[f"{layer}.bias"] = torch.randn(shape[0], generator=generator) * 0.05
    return state


def test_onet_takes_the_package_keys_and_gives_its_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "onet.pt"
    torch.save(_package_state(), path)
    monkeypatch.setenv(onet_model.WEIGHTS_ENV, str(path))
    net = onet_model.build()
    assert isinstance(net, onet_model.ONet)
    assert isinstance(net.trunk, torch.nn.Module) and list(net.heads) == ["box", "landmarks", "prob"]
    with torch.no_grad():
        box, landmarks, prob = net(torch.randn(2, 3, CROP, CROP))
    assert box.shape == (2, 4) and landmarks.shape == (2, 10) and prob.shape == (2, 2)
    torch.testing.assert_close(prob.sum(1), torch.ones(2))
    # the package flattens W, H, C: a transposed input changes the features
    x = torch.randn(1, 3, CROP, CROP)
    with torch.no_grad():
        assert not torch.allclose(net.trunk(x), net.trunk(x.transpose(2, 3)))


def test_missing_weights_say_where_they_come_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(onet_model.WEIGHTS_ENV, str(tmp_path / "absent.pt"))
    with pytest.raises(FileNotFoundError, match=r"facenet-pytorch 2\.6\.0 wheel"):
        onet_model.build()


def test_split_with_the_committed_specs(tmp_path: Path) -> None:
    net = onet_model.ONet().eval()
    net.load_state_dict(onet_model.map_package_keys(_package_state(1)))
    options = SplitOptions(input_spec=SPECS / "input.toml", head_spec=SPECS / "heads.toml")
    split_torch_model(net, tmp_path / "bundle", options)
    manifest = load_bundle(tmp_path / "bundle").manifest
    assert manifest.trunk.outputs == ("features",)
    assert {name: head.outputs for name, head in manifest.heads.items()} == {
        "face": ("prob",),
        "box": ("box",),
        "landmarks": ("landmarks",),
    }
    raw = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert raw["split"]["verification"]["max_abs_error"] <= 1e-6
    assert raw["input"]["mean"] == [127.5] * 3 and raw["input"]["std"] == [128.0] * 3


def test_same_outputs_as_the_package_s_onet_when_cached() -> None:
    """Our module against the package's own ``ONet`` class (its source read from the cached wheel,
    executed alone: the package's ``__init__`` would import torchvision), both with ``onet.pt``."""
    weights = onet_model.default_weights()
    wheel = weights.parents[3].parent / "wheels" / "facenet_pytorch-2.6.0-py3-none-any.whl"
    if not weights.is_file() or not wheel.is_file():
        pytest.skip(f"{weights} or {wheel}: not in the zoo cache (zoo/mtcnn.py fetches them)")
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("facenet_pytorch/models/mtcnn.py").decode()
    code = source[source.index("class ONet") : source.index("class MTCNN")]
    code = code.replace("os.path.join(os.path.dirname(__file__), '../data/onet.pt')", "WEIGHTS")
    namespace: dict[str, Any] = {"nn": torch.nn, "torch": torch, "WEIGHTS": str(weights)}
    exec(code, namespace)
    theirs = namespace["ONet"]().eval()
    ours = onet_model.load(weights)
    x = (torch.rand(6, 3, CROP, CROP, generator=torch.Generator().manual_seed(0)) * 255 - 127.5) * 0.0078125
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def _record() -> dict[str, Any]:
    marks = [0.3, 0.7, 0.5, 0.35, 0.65, 0.4, 0.4, 0.6, 0.8, 0.8]
    crops: list[dict[str, Any]] = [
        {
            "id": "0000",
            "box": [10.0, 20.0, 57.0, 67.0],
            "onet": {"prob": [0.1, 0.9], "landmarks": marks, "box": [0.1] * 4},
        },
        {
            "id": "0001",
            "box": [0.0, 0.0, 95.0, 95.0],
            "onet": {"prob": [0.8, 0.2], "landmarks": marks, "box": [-0.1] * 4},
        },
    ]
    for crop in crops:
        crop["onet_png"] = crop["onet"]
    points = landmarks_px(np.array(marks), crops[0]["box"]).tolist()
    return {"crops": crops, "images": {"a.jpg": {"crops": ["0000", "0001"], "points": [points]}}}


def _line(prob: list[float], marks: list[float], box: list[float]) -> dict[str, Any]:
    order = np.argsort(prob)[::-1]
    labels = ["background", "face"]
    points = (np.stack([marks[:5], marks[5:]], 1) * CROP).tolist()
    return {
        "results": {
            "face": {"labels": [labels[i] for i in order], "scores": [prob[i] for i in order]},
            "landmarks": {"points": points},
            "box": {"values": box},
        },
        "latency_ms": {"total": 1.0},
    }


def test_compare_and_replay_arithmetic() -> None:
    record = _record()
    assert replay_error(record) == 0.0
    lines = [_line(c["onet"]["prob"], c["onet"]["landmarks"], c["onet"]["box"]) for c in record["crops"]]
    same = compare(record, lines)
    assert same["agreement"].fraction == 1.0 and same["agreement"].extra == 0 and same["top1"] == 1.0
    assert same["landmark_error"] == pytest.approx(0.0, abs=1e-9)
    # one landmark 0.01 off (0.01 x 48 px box side) on the face crop; the other crop flips to "face"
    moved = list(record["crops"][0]["onet"]["landmarks"])
    moved[0] += 0.01
    lines[0] = _line([0.1, 0.9], moved, [0.1] * 4)
    lines[1] = _line([0.2, 0.8], record["crops"][1]["onet"]["landmarks"], [-0.1] * 4)
    off = compare(record, lines)
    assert off["agreement"].extra == 1 and off["top1"] == 0.5
    assert off["landmark_error"] == pytest.approx(0.01 * 48 / 5 / np.hypot(48, 48), rel=1e-6)
