"""One colour per emotion label, shared by the live page, dashboards, reports and PDFs.

The colours are the Okabe-Ito palette (Okabe & Ito, "Color Universal Design", 2008), chosen to stay distinct under
the common colour-vision deficiencies (deuteranopia, protanopia, tritanopia). Text drawn *on* a label colour (face
tags, chips) uses ``LABEL_TEXT_COLORS``: black or white, whichever contrasts more, at least 4.5:1 (WCAG 2 AA for
normal text) for every label; ``tests/sessions_app/web/test_palette.py`` checks both properties.
"""

from __future__ import annotations

#: Chart colour per label (Okabe-Ito), keyed by the ``LABELS`` names.
LABEL_COLORS: dict[str, str] = {
    "angry": "#D55E00",  # vermillion
    "disgust": "#CC79A7",  # reddish purple
    "fear": "#E69F00",  # orange
    "happy": "#009E73",  # bluish green
    "sad": "#0072B2",  # blue
    "surprise": "#56B4E9",  # sky blue
    "neutral": "#BBBBBB",  # light grey (#999999 would be close to reddish purple for deuteranopes)
}

#: Colour of the "too few faces" columns and of other non-data marks.
HIDDEN_COLOR = "#DDDDDD"


def relative_luminance(hex_color: str) -> float:
    """WCAG 2 relative luminance (0 = black .. 1 = white) of an sRGB colour ``"#RRGGBB"``."""
    channels = [int(hex_color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two colours ``"#RRGGBB"``, 1..21 (4.5 = AA for normal text)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_color_on(background: str) -> str:
    """``"#000000"`` or ``"#FFFFFF"``, whichever has the higher contrast on ``background``."""
    return max(("#000000", "#FFFFFF"), key=lambda fg: contrast_ratio(fg, background))


#: Text colour on each label colour (black or white, the one with more contrast).
LABEL_TEXT_COLORS: dict[str, str] = {label: text_color_on(color) for label, color in LABEL_COLORS.items()}
