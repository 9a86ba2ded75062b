"""Oracle for MTCNN's O-Net: facenet-pytorch 2.6.0's own ``MTCNN.detect``, with its O-Net stage recorded.

Runs in the oracle environment (torch 2.13.0 CPU, facenet-pytorch 2.6.0 without its
dependencies, numpy, Pillow, requests), with ``zoo/torchvision_stub`` first on ``sys.path``
(the package imports torchvision; only its NMS and ``to_tensor`` are used). For each image,
``MTCNN(keep_all=True).detect(img, landmarks=True)`` runs unchanged; three package functions are
wrapped to record the third stage as the package computes it (``detect_face.py:133-169``):

- ``pad``: its last call before O-Net gives the boxes (float, after ``bbreg`` + ``rerec``) and the
  1-based truncated crop bounds each O-Net input is cut from;
- ``imresample`` at 48x48: the crop after ``interpolate(mode="area")``, before normalisation;
- O-Net's forward (hook): its input and its outputs (box regression, landmarks, probabilities).

Writes, under ``--out``: ``crops/NNNN.png`` (each O-Net input crop rounded to uint8 RGB, the frames
the bundle is run on), ``crops_float.npy`` (the exact float crops, N x 48 x 48 x 3), and
``oracle.json``: per crop its image, float box, crop bounds and O-Net outputs on the package's own
input (``onet``) and on the uint8 PNG (``onet_png``); per image the final boxes, probabilities and
landmarks of ``detect``.

Usage (oracle venv python): ``mtcnn_oracle.py --out DIR IMAGE [IMAGE ...]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

STUB = Path(__file__).resolve().parent.parent / "torchvision_stub"
NORM = 0.0078125
CROP = 48


def _round(values: Any, digits: int = 7) -> Any:
    """Floats of a nested list rounded for JSON."""
    if isinstance(values, list):
        return [_round(v, digits) for v in values]
    return round(float(values), digits)


class Recorder:
    """Wraps the package's ``pad`` and ``imresample`` and hooks O-Net, one image at a time."""

    def __init__(self, mtcnn: Any, detect_module: Any) -> None:
        import torch

        self.torch = torch
        self.pads: list[tuple[Any, Any, Any, Any, Any]] = []
        self.crops: list[Any] = []
        self.onet_in: list[Any] = []
        self.onet_out: list[tuple[Any, Any, Any]] = []
        self.stage3_pad: tuple[Any, ...] | None = None
        self.active = True
        pad, imresample = detect_module.pad, detect_module.imresample

        def recorded_pad(boxes: Any, w: int, h: int) -> Any:
            out = pad(boxes, w, h)
            self.pads.append((boxes.detach().clone(), *(a.copy() for a in out)))
            return out

        def recorded_imresample(img: Any, sz: Any) -> Any:
            out = imresample(img, sz)
            if tuple(sz) == (CROP, CROP):
                self.crops.append(out.detach().clone())
            return out

        def hook(_module: Any, inputs: Any, outputs: Any) -> None:
            if not self.active:
                return
            self.stage3_pad = self.pads[-1]
            self.onet_in.append(inputs[0].detach().clone())
            self.onet_out.append(tuple(o.detach().clone() for o in outputs))

        detect_module.pad = recorded_pad
        detect_module.imresample = recorded_imresample
        mtcnn.onet.register_forward_hook(hook)

    def reset(self) -> None:
        """Forget the previous image."""
        self.pads.clear()
        self.crops.clear()
        self.onet_in.clear()
        self.onet_out.clear()
        self.stage3_pad = None


def run(images: list[Path], out: Path) -> dict[str, Any]:
    """Detect faces on ``images`` with the package; write the crops and return the record."""
    sys.path.insert(0, str(STUB))
    import numpy as np
    import torch
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils import detect_face as detect_module
    from PIL import Image

    torch.set_num_threads(1)  # deterministic, and the package's batch sizes are small
    mtcnn = MTCNN(keep_all=True, device="cpu")
    recorder = Recorder(mtcnn, detect_module)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "package": "facenet-pytorch 2.6.0",
        "call": "MTCNN(keep_all=True).detect(img, landmarks=True)",
        "torch": torch.__version__,
        "thresholds": list(mtcnn.thresholds),
        "images": {},
        "crops": [],
    }
    floats: list[Any] = []
    for path in images:
        recorder.reset()
        # The package needs 3-channel RGB (np.uint8(img) of an L or RGBA image breaks its permute)
        img = Image.open(path).convert("RGB")
        with torch.no_grad():
            boxes, probs, points = mtcnn.detect(img, landmarks=True)
        ids: list[str] = []
        if recorder.onet_in:
            assert recorder.stage3_pad is not None
            net_in = torch.cat(recorder.onet_in)
            b, c, a = (torch.cat([o[i] for o in recorder.onet_out]) for i in range(3))
            crops = torch.cat(recorder.crops[-len(net_in) :])
            if not torch.allclose((crops - 127.5) * NORM, net_in):
                raise RuntimeError(f"{path.name}: the recorded 48x48 crops are not O-Net's inputs")
            fbox, y, ey, x, ex = recorder.stage3_pad
            valid = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
            if len(valid) != len(net_in):
                raise RuntimeError(f"{path.name}: {len(valid)} crop bounds for {len(net_in)} O-Net inputs")
            pixels = crops.permute(0, 2, 3, 1).numpy()  # N x 48 x 48 x 3 RGB, float
            as_png = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
            recorder.active = False
            with torch.no_grad():
                png_in = (torch.from_numpy(as_png).permute(0, 3, 1, 2).float() - 127.5) * NORM
                pb, pc, pa = mtcnn.onet(png_in)
            recorder.active = True
            for n, k in enumerate(valid):
                crop_id = f"{len(record['crops']):04d}"
                Image.fromarray(as_png[n], "RGB").save(out / "crops" / f"{crop_id}.png")
                floats.append(pixels[n])
                ids.append(crop_id)
                record["crops"].append(
                    {
                        "id": crop_id,
                        "image": path.name,
                        "box": _round(fbox[k, :4].tolist(), 4),
                        "crop_px": [int(x[k]) - 1, int(y[k]) - 1, int(ex[k]), int(ey[k])],
                        "onet": {
                            "box": _round(b[n].tolist()),
                            "landmarks": _round(c[n].tolist()),
                            "prob": _round(a[n].tolist()),
                        },
                        "onet_png": {
                            "box": _round(pb[n].tolist()),
                            "landmarks": _round(pc[n].tolist()),
                            "prob": _round(pa[n].tolist()),
                        },
                    }
                )
        found = boxes is not None
        record["images"][path.name] = {
            "size": list(img.size),
            "crops": ids,
            "boxes": _round(boxes.tolist(), 4) if found else [],
            "probs": _round(probs.tolist()) if found else [],
            "points": _round(points.tolist(), 4) if found else [],
        }
        print(f"{path.name}: {len(ids)} O-Net crops, {len(boxes) if found else 0} faces", file=sys.stderr)
    np.save(out / "crops_float.npy", np.stack(floats) if floats else np.zeros((0, CROP, CROP, 3), np.float32))
    return record


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--out DIR IMAGE...``; writes ``DIR/oracle.json``, ``DIR/crops/``, ``DIR/crops_float.npy``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record = run(sorted(args.images), args.out)
    (args.out / "oracle.json").write_text(json.dumps(record, indent=1) + "\n")
    faces = sum(1 for c in record["crops"] if c["onet"]["prob"][1] > record["thresholds"][2])
    threshold, count = record["thresholds"][2], len(record["crops"])
    print(f"{count} O-Net crops ({faces} above {threshold}) in {len(record['images'])} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
