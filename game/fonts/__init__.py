"""The fonts our renderers draw with (DejaVu, free licence in LICENSE-DejaVu.txt): one place for
card indices (GeneralPoints) and storefront signs (V-IRL). Shipped as package data; nothing is
looked up on the system or downloaded."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_DIR = Path(__file__).resolve().parent
SANS = "DejaVuSans.ttf"
SANS_BOLD = "DejaVuSans-Bold.ttf"
SANS_CONDENSED_BOLD = "DejaVuSansCondensed-Bold.ttf"


def font_path(name: str) -> Path:
    path = FONT_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"bundled font missing: {path}")
    return path


@lru_cache(maxsize=64)
def truetype(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(name)), size)
