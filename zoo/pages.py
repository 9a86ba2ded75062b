"""Synthetic document pages for the layout model: A4 at 150 dpi (1240 x 1754), drawn with Pillow.

Three layouts: (1) title, authors, section heading, paragraphs, a bar chart with its caption;
(2) paragraphs, a table caption above a ruled table, more paragraphs; (3) two columns, text on
the left, a figure, its caption, a table caption and a table on the right. Every page has a running
header, a rule and a page number. Text, bar heights and table numbers come from
``random.Random(seed * 10 + layout)``, so a (seed, layout) pair always gives the same page.

The fonts are the DejaVu faces shipped in the pinned matplotlib wheel (checked by sha256), so the
pages do not depend on the fonts of the host. Pillow's rasteriser (FreeType) may still differ by
version; the oracle and the bundle always read the same files, so comparisons hold either way.

Example::

    fonts = page_fonts(cache)
    render_page(fonts, seed=1234, layout=1).save("page.png")
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from zoo.fetch import Member, Wheel, member_path

W, H = 1240, 1754
MARGIN = 110
LAYOUTS = (1, 2, 3)

MATPLOTLIB = Wheel(
    "matplotlib",
    "3.11.2",
    "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8",
)
_FONT_DIR = "matplotlib/mpl-data/fonts/ttf/"
FONTS = {
    "sans": Member(
        MATPLOTLIB, _FONT_DIR + "DejaVuSans.ttf", "3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22"
    ),
    "sans-bold": Member(
        MATPLOTLIB,
        _FONT_DIR + "DejaVuSans-Bold.ttf",
        "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167",
    ),
    "serif": Member(
        MATPLOTLIB, _FONT_DIR + "DejaVuSerif.ttf", "107244956e9962b9e96faccdc551825e0ae0898ae13737133e1b921a2fd35ffa"
    ),
    "serif-bold": Member(
        MATPLOTLIB,
        _FONT_DIR + "DejaVuSerif-Bold.ttf",
        "c3753f2ed6bc673f15846dc45addbeb3b9c872f32fb18fd53a21f1bef1ed7676",
    ),
    "serif-italic": Member(
        MATPLOTLIB,
        _FONT_DIR + "DejaVuSerif-Italic.ttf",
        "3e7994fbc54fa10ce3352a42d548fadd7d9cadb69cb1109bc9d960f6dac57f04",
    ),
}

WORDS = (
    "the model splits a network into a shared trunk and several task heads each head decodes its outputs on the "
    "device while the trunk runs once per frame results are published with timestamps and the scheduler decides "
    "which heads run on which frames layout analysis finds titles paragraphs figures tables captions headers and "
    "footers in scanned documents experiments show that accuracy is preserved after quantisation and latency drops "
    "on small boards memory use is bounded by the ring buffer and the spool keeps results when offline"
).split()

TEXT = (20, 20, 20)
BLACK = (0, 0, 0)
GREY = (60, 60, 60)
BARS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
TABLE_HEADS = ("Model", "Params (M)", "Latency (ms)", "mAP", "Memory (MB)", "Board")
TABLE_NAMES = ("PicoDet-S", "PicoDet-M", "YOLOv8n", "YOLOX-T", "NanoDet", "SSD-Lite", "MobileNet", "RetinaF")


@dataclass(frozen=True)
class Fonts:
    """Where the DejaVu faces are; :meth:`get` opens one at a size."""

    paths: dict[str, Path]

    def get(self, face: str, size: int) -> ImageFont.FreeTypeFont:
        """The face (a key of :data:`FONTS`) at ``size`` pixels."""
        return ImageFont.truetype(str(self.paths[face]), size)


def page_fonts(cache: Path) -> Fonts:
    """The page fonts, extracted (and checked) from the pinned matplotlib wheel."""
    return Fonts({face: member_path(cache, member) for face, member in FONTS.items()})


class _Page:
    """One page being drawn: the canvas, its random source and the fonts."""

    def __init__(self, fonts: Fonts, rng: random.Random, number: int) -> None:
        self.image = Image.new("RGB", (W, H), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.rng = rng
        self.fonts = fonts
        italic = fonts.get("serif-italic", 20)
        self.draw.text((MARGIN, 50), "Journal of Edge Inference, Vol. 7, No. 3 (2024)", fill=GREY, font=italic)
        self.draw.line((MARGIN, 82, W - MARGIN, 82), fill=(120, 120, 120), width=1)
        self.draw.text((W // 2 - 10, H - 80), str(number), fill=GREY, font=italic)

    def sentence(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words)).capitalize() + "."

    def wrap(self, text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
        lines: list[str] = []
        current = ""
        for word in text.split():
            candidate = f"{current} {word}".strip()
            if self.draw.textlength(candidate, font=font) <= width:
                current = candidate
            else:
                lines.append(current)
                current = word
        if current:
            lines.append(current)
        return lines

    def paragraph(self, x: int, y: int, width: int, sentences: int, size: int, line_height: int) -> int:
        """A paragraph with an indented first line; returns the y below it."""
        font = self.fonts.get("serif", size)
        text = " ".join(self.sentence(self.rng.randint(8, 18)) for _ in range(sentences))
        for i, line in enumerate(self.wrap(text, font, width)):
            self.draw.text((x + (40 if i == 0 else 0), y), line, fill=TEXT, font=font)
            y += line_height
        return y

    def centred(self, y: int, text: str, font: ImageFont.FreeTypeFont, fill: tuple[int, int, int] = BLACK) -> None:
        self.draw.text(((W - self.draw.textlength(text, font=font)) / 2, y), text, fill=fill, font=font)

    def lines(self, x: int, y: int, text: str, font: ImageFont.FreeTypeFont, width: int, step: int) -> int:
        for line in self.wrap(text, font, width):
            self.draw.text((x, y), line, fill=BLACK, font=font)
            y += step
        return y

    def figure(self, x: int, y: int, w: int, h: int) -> None:
        """A framed bar chart with axes, tick labels and bar names."""
        d = self.draw
        d.rectangle((x, y, x + w, y + h), outline=BLACK, width=2)
        ax0, ay0, ax1, ay1 = x + 60, y + 20, x + w - 20, y + h - 50
        d.line((ax0, ay1, ax1, ay1), fill=BLACK, width=2)
        d.line((ax0, ay0, ax0, ay1), fill=BLACK, width=2)
        bars = 8
        bw = (ax1 - ax0) / (bars * 1.5)
        small = self.fonts.get("sans", 16)
        for i in range(bars):
            bh = self.rng.uniform(0.2, 0.95) * (ay1 - ay0)
            bx = ax0 + bw * 0.5 + i * bw * 1.5
            d.rectangle((bx, ay1 - bh, bx + bw, ay1), fill=BARS[i % len(BARS)])
            d.text((bx, ay1 + 8), f"B{i + 1}", fill=BLACK, font=small)
        for k in range(5):
            ty = ay1 - k * (ay1 - ay0) / 4
            d.line((ax0 - 6, ty, ax0, ty), fill=BLACK, width=2)
            d.text((ax0 - 45, ty - 9), f"{k * 25}", fill=BLACK, font=small)

    def table(self, x: int, y: int, w: int, rows: int, cols: int, row_height: int = 44) -> int:
        """A ruled table with a bold header row; returns the y below it."""
        d = self.draw
        regular, bold = self.fonts.get("sans", 20), self.fonts.get("sans-bold", 20)
        cw = w / cols
        for r in range(rows + 1):
            yy = y + r * row_height
            d.line((x, yy, x + w, yy), fill=BLACK, width=3 if r in (0, 1, rows) else 1)
        for c in range(cols + 1):
            d.line((x + c * cw, y, x + c * cw, y + rows * row_height), fill=BLACK, width=1)
        for c in range(cols):
            d.text((x + c * cw + 10, y + 10), TABLE_HEADS[c % len(TABLE_HEADS)], fill=BLACK, font=bold)
        for r in range(1, rows):
            for c in range(cols):
                text = TABLE_NAMES[(r - 1) % len(TABLE_NAMES)] if c == 0 else f"{self.rng.uniform(0.5, 99):.1f}"
                d.text((x + c * cw + 10, y + r * row_height + 10), text, fill=BLACK, font=regular)
        return y + rows * row_height


def _layout1(page: _Page) -> None:
    f = page.fonts
    page.centred(130, "Splitting Multi-Task Networks for Edge Devices", f.get("serif-bold", 40))
    page.centred(200, "A. Author, B. Writer and C. Researcher", f.get("serif", 24), fill=(40, 40, 40))
    heading, width = f.get("serif-bold", 28), W - 2 * MARGIN
    page.draw.text((MARGIN, 280), "1. Introduction", fill=BLACK, font=heading)
    y = page.paragraph(MARGIN, 330, width, 7, 22, 32) + 24
    y = page.paragraph(MARGIN, y, width, 6, 22, 32) + 40
    page.figure(MARGIN + 120, y, width - 240, 440)
    y += 440 + 16
    caption = "Figure 1: Latency of the trunk and of each head on four boards (ms, lower is better)."
    page.centred(y, caption, f.get("serif-italic", 20))
    y += 60
    page.draw.text((MARGIN, y), "2. Method", fill=BLACK, font=heading)
    page.paragraph(MARGIN, y + 50, width, 6, 22, 32)


def _layout2(page: _Page) -> None:
    f = page.fonts
    width = W - 2 * MARGIN
    y = page.paragraph(MARGIN, 130, width, 6, 22, 32) + 40
    page.centred(
        y, "Table 1: Accuracy, latency and memory of the detectors on the evaluation boards.", f.get("serif-italic", 20)
    )
    y = page.table(MARGIN, y + 44, width, 9, 6) + 50
    page.draw.text((MARGIN, y), "3. Results", fill=BLACK, font=f.get("serif-bold", 28))
    y = page.paragraph(MARGIN, y + 50, width, 7, 22, 32) + 24
    y = page.paragraph(MARGIN, y, width, 8, 22, 32) + 24
    page.paragraph(MARGIN, y, width, 5, 22, 32)


def _layout3(page: _Page) -> None:
    f = page.fonts
    italic = f.get("serif-italic", 18)
    column = (W - 2 * MARGIN - 50) // 2
    left, right = MARGIN, MARGIN + column + 50
    page.draw.text((left, 130), "4. Discussion", fill=BLACK, font=f.get("serif-bold", 26))
    y = 176
    for _ in range(4):
        y = page.paragraph(left, y, column, 5, 20, 29) + 20
    page.figure(right, 130, column, 380)
    caption = "Figure 2: Frames per second with one, two and four heads scheduled on every frame."
    y = page.lines(right, 130 + 380 + 12, caption, italic, column, 26)
    y = page.lines(right, y + 40, "Table 2: Results per head after INT8 quantisation.", italic, column, 26)
    y = page.table(right, y + 10, column, 7, 3, row_height=40) + 40
    page.paragraph(right, y, column, 5, 20, 29)


_DRAW: dict[int, Callable[[_Page], None]] = {1: _layout1, 2: _layout2, 3: _layout3}


def render_page(fonts: Fonts, seed: int, layout: int) -> Image.Image:
    """Page ``layout`` (1, 2 or 3) drawn with the text and numbers of ``seed``."""
    page = _Page(fonts, random.Random(seed * 10 + layout), layout)
    _DRAW[layout](page)
    return page.image


def render_pages(fonts: Fonts, folder: Path, seeds: Sequence[int], count: int | None = None) -> list[Path]:
    """Every layout for each seed in turn (at most ``count`` pages) as ``s<seed>_page<layout>.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [(seed, layout) for seed in seeds for layout in LAYOUTS]
    paths = []
    for seed, layout in pairs[:count]:
        path = folder / f"s{seed}_page{layout}.png"
        render_page(fonts, seed, layout).save(path)
        paths.append(path)
    return paths


__all__ = ["FONTS", "LAYOUTS", "MATPLOTLIB", "Fonts", "page_fonts", "render_page", "render_pages"]
