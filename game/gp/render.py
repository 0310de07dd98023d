"""Card images for GeneralPoints: our own drawn card art and the reference's table layout.

- `card_image(card)`: one card face, 750 × 1050 RGBA like the reference's assets, with fully
  transparent rounded corners. Suits are drawn as vector shapes (no font glyphs, no third-party
  art); ranks use the bundled DejaVu font (`game/fonts`).
- `table_image(cards)`: the reference's GP-VL observation — a 1200 × 1200 `#35654d` canvas with
  the cards resized to 270 × 378 at x = 5, 302, 599, 896 and y = 411, pasted *without* an alpha
  mask so the transparent corners come out black, exactly as the reference's images do.
  `caption=True` adds the paper-era "Formula:" label (DejaVuSans 64 px at (10, 840)).
- `encode(image, "png" | "jpeg")`: bytes for APIs (the reference's API evaluator sends JPEG).

Everything is cached per card, so a table renders in a few milliseconds.
"""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fonts import SANS, SANS_BOLD, truetype
from .cards import Card

CARD_W, CARD_H = 750, 1050
TABLE_SIZE = 1200
TABLE_GREEN = (0x35, 0x65, 0x4D)
RED = (196, 30, 58)
BLACK = (20, 20, 24)


def table_layout(resolution: int = TABLE_SIZE) -> tuple[int, int, list[tuple[int, int]]]:
    """Card size and top-left positions of the reference layout: (w, h, [(x, y) × 4])."""
    w = int(resolution / 4 * 0.9)
    h = int(w * 7 / 5)
    y = int((resolution - h) / 2)
    return w, h, [(5 + int(i * w * 1.1), y) for i in range(4)]


def font(size: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    return truetype(SANS_BOLD if bold else SANS, size)


# --------------------------------------------------------------------------- suit shapes
def _suit(draw: ImageDraw.ImageDraw, suit: str, cx: float, cy: float, size: float, color) -> None:
    """Draw one suit symbol centred at (cx, cy), `size` = its height in pixels."""
    s = size / 2
    if suit == "D":
        draw.polygon([(cx, cy - s), (cx + 0.72 * s, cy), (cx, cy + s), (cx - 0.72 * s, cy)], fill=color)
    elif suit == "H":
        r = 0.5 * s
        draw.ellipse([cx - 2 * r, cy - s, cx, cy - s + 2 * r], fill=color)
        draw.ellipse([cx, cy - s, cx + 2 * r, cy - s + 2 * r], fill=color)
        draw.polygon([(cx - 1.95 * r, cy - s + 1.25 * r), (cx + 1.95 * r, cy - s + 1.25 * r), (cx, cy + s)],
                     fill=color)
    elif suit == "S":
        r = 0.48 * s
        draw.polygon([(cx, cy - s), (cx + 1.95 * r, cy + 0.1 * s), (cx - 1.95 * r, cy + 0.1 * s)], fill=color)
        draw.ellipse([cx - 2 * r, cy - 0.35 * s, cx, cy - 0.35 * s + 2 * r], fill=color)
        draw.ellipse([cx, cy - 0.35 * s, cx + 2 * r, cy - 0.35 * s + 2 * r], fill=color)
        _stem(draw, cx, cy, s, color)
    elif suit == "C":
        r = 0.36 * s
        draw.ellipse([cx - r, cy - s, cx + r, cy - s + 2 * r], fill=color)
        draw.ellipse([cx - 2.05 * r, cy - 0.42 * s, cx - 0.05 * r, cy - 0.42 * s + 2 * r], fill=color)
        draw.ellipse([cx + 0.05 * r, cy - 0.42 * s, cx + 2.05 * r, cy - 0.42 * s + 2 * r], fill=color)
        draw.ellipse([cx - 0.6 * r, cy - 0.55 * s, cx + 0.6 * r, cy + 0.1 * s], fill=color)
        _stem(draw, cx, cy, s, color)
    else:
        raise ValueError(f"unknown suit {suit!r}")


def _stem(draw, cx, cy, s, color) -> None:
    draw.polygon([(cx - 0.08 * s, cy + 0.1 * s), (cx + 0.08 * s, cy + 0.1 * s),
                  (cx + 0.38 * s, cy + s), (cx - 0.38 * s, cy + s)], fill=color)


# Pip positions for 2..10 in a unit box (x in 0..1, y in 0..1); pips below the middle are flipped.
_PIPS: dict[int, list[tuple[float, float]]] = {
    2: [(0.5, 0.0), (0.5, 1.0)],
    3: [(0.5, 0.0), (0.5, 0.5), (0.5, 1.0)],
    4: [(0, 0), (1, 0), (0, 1), (1, 1)],
    5: [(0, 0), (1, 0), (0.5, 0.5), (0, 1), (1, 1)],
    6: [(0, 0), (1, 0), (0, 0.5), (1, 0.5), (0, 1), (1, 1)],
    7: [(0, 0), (1, 0), (0.5, 0.25), (0, 0.5), (1, 0.5), (0, 1), (1, 1)],
    8: [(0, 0), (1, 0), (0.5, 0.25), (0, 0.5), (1, 0.5), (0.5, 0.75), (0, 1), (1, 1)],
    9: [(0, 0), (1, 0), (0, 1 / 3), (1, 1 / 3), (0.5, 0.5), (0, 2 / 3), (1, 2 / 3), (0, 1), (1, 1)],
    10: [(0, 0), (1, 0), (0.5, 1 / 6), (0, 1 / 3), (1, 1 / 3), (0, 2 / 3), (1, 2 / 3), (0.5, 5 / 6),
         (0, 1), (1, 1)],
}


def _flipped_suit(img: Image.Image, suit: str, cx: float, cy: float, size: float, color) -> None:
    """Draw a suit upside down (the lower half of a card's pips), via a small rotated tile."""
    tile_size = int(size * 1.2) + 4
    tile = Image.new("RGBA", (tile_size, tile_size), (0, 0, 0, 0))
    _suit(ImageDraw.Draw(tile), suit, tile_size / 2, tile_size / 2, size, color + (255,))
    tile = tile.rotate(180)
    img.alpha_composite(tile, (int(cx - tile_size / 2), int(cy - tile_size / 2)))


@lru_cache(maxsize=64)
def card_image(card: Card) -> Image.Image:
    """The 750 × 1050 RGBA face of one card (transparent outside the rounded rectangle)."""
    img = Image.new("RGBA", (CARD_W, CARD_H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    radius = 48
    draw.rounded_rectangle([3, 3, CARD_W - 4, CARD_H - 4], radius=radius, fill=(253, 252, 248, 255),
                           outline=(150, 150, 150, 255), width=4)
    color = RED if card.is_red else BLACK
    label = card.label
    # Corner indices: rank over a small suit, top-left and (rotated) bottom-right.
    idx = Image.new("RGBA", (150, 250), (0, 0, 0, 0))
    idraw = ImageDraw.Draw(idx)
    f = font(110 if label != "10" else 92)
    idraw.text((75, 70), label, font=f, fill=color + (255,), anchor="mm")
    _suit(idraw, card.suit, 75, 175, 78, color + (255,))
    img.alpha_composite(idx, (18, 22))
    img.alpha_composite(idx.rotate(180), (CARD_W - 150 - 18, CARD_H - 250 - 22))

    box = (262, 215, CARD_W - 262, CARD_H - 215)  # pip area
    if card.rank == 1:
        _suit(draw, card.suit, CARD_W / 2, CARD_H / 2, 330, color + (255,))
    elif card.rank <= 10:
        x0, y0, x1, y1 = box
        size = 112 if card.rank <= 8 else 100
        for ux, uy in _PIPS[card.rank]:
            cx, cy = x0 + ux * (x1 - x0), y0 + uy * (y1 - y0)
            if uy > 0.5:
                _flipped_suit(img, card.suit, cx, cy, size, color)
            else:
                _suit(draw, card.suit, cx, cy, size, color + (255,))
    else:
        _draw_court(img, card, color)
    return img


def _draw_court(img: Image.Image, card: Card, color) -> None:
    """Court cards: a framed panel with the letter and suits, mirrored top/bottom like real decks."""
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = 170, 190, CARD_W - 170, CARD_H - 190
    tint = (250, 226, 226, 255) if card.is_red else (226, 232, 244, 255)
    draw.rectangle([x0, y0, x1, y1], fill=tint, outline=color + (255,), width=8)
    half = Image.new("RGBA", (x1 - x0, (y1 - y0) // 2), (0, 0, 0, 0))
    hd = ImageDraw.Draw(half)
    hw, hh = half.size
    hd.text((hw / 2, hh * 0.47), card.label, font=font(210), fill=color + (255,), anchor="mm")
    for dx in (-0.33, 0.33):
        _suit(hd, card.suit, hw / 2 + dx * hw, hh * 0.16, 70, color + (255,))
    crown = [(hw / 2 - 90, hh * 0.95), (hw / 2 - 90, hh * 0.86), (hw / 2 - 45, hh * 0.91),
             (hw / 2, hh * 0.84), (hw / 2 + 45, hh * 0.91), (hw / 2 + 90, hh * 0.86), (hw / 2 + 90, hh * 0.95)]
    hd.polygon(crown, fill=(212, 165, 32, 255))
    img.alpha_composite(half, (x0, y0))
    img.alpha_composite(half.rotate(180), (x0, y0 + hh))
    draw.line([x0 + 20, (y0 + y1) // 2, x1 - 20, (y0 + y1) // 2], fill=color + (255,), width=4)


@lru_cache(maxsize=128)
def _resized(card: Card, w: int, h: int) -> Image.Image:
    return card_image(card).resize((w, h))  # Pillow's default resampling, as the reference


def table_image(cards, *, resolution: int = TABLE_SIZE, caption: bool = False) -> Image.Image:
    """The reference's GP-VL observation image (RGB) for four cards in dealing order; a None
    leaves its slot empty (the tiny vision checkpoints' training layouts)."""
    cards = list(cards)
    if len(cards) != 4:
        raise ValueError(f"the table shows exactly 4 cards, got {len(cards)}")
    canvas = Image.new("RGB", (resolution, resolution), TABLE_GREEN)
    w, h, positions = table_layout(resolution)
    for card, pos in zip(cards, positions):
        if card is None:
            continue
        # No mask: transparent pixels are pasted as their RGB value (black), as in the reference.
        canvas.paste(_resized(card, w, h), pos)
    if caption:
        size = int(resolution / 300 * 16)
        ImageDraw.Draw(canvas).text((10, int(resolution * 0.7)), "Formula:", font=font(size, bold=False),
                                    fill=(255, 255, 255))
    return canvas


def table_array(cards, **kwargs) -> np.ndarray:
    """`table_image` as a (H, W, 3) uint8 array (the Gymnasium observation)."""
    return np.asarray(table_image(cards, **kwargs), dtype=np.uint8)


def encode(image: Image.Image, fmt: str = "png", quality: int = 90) -> bytes:
    """PNG or JPEG bytes of an image."""
    fmt = fmt.lower()
    if fmt not in ("png", "jpeg", "jpg"):
        raise ValueError(f"image format must be png or jpeg, got {fmt!r}")
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=1)
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def hand_strip(cards, height: int = 300, gap: int = 16) -> Image.Image:
    """A UI-friendly strip of card faces on a transparent background (alpha-composited)."""
    cards = list(cards)
    w = int(height * CARD_W / CARD_H)
    strip = Image.new("RGBA", (len(cards) * w + (len(cards) - 1) * gap, height), (0, 0, 0, 0))
    for i, card in enumerate(cards):
        strip.alpha_composite(card_image(card).resize((w, height), Image.Resampling.LANCZOS), (i * (w + gap), 0))
    return strip


__all__ = ["card_image", "table_image", "table_array", "table_layout", "encode", "hand_strip"]
