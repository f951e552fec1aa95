"""The label colours (issue 12): distinct under simulated colour-vision deficiencies, and text on them readable."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inference.labels import LABELS
from sessions_app.palette import LABEL_COLORS, LABEL_TEXT_COLORS, contrast_ratio

#: Machado, Oliveira & Fernandes (2009), severity 1.0, applied to linear sRGB.
CVD = {
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
OLD_D3 = {"angry": "#d62728", "happy": "#2ca02c", "fear": "#9467bd", "sad": "#1f77b4"}


def _linear(hex_color: str) -> np.ndarray:
    c = np.array([int(hex_color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)])
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of a linear sRGB colour."""
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ np.clip(linear_rgb, 0, 1) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _distance(a: str, b: str, vision: str | None) -> float:
    """CIE76 colour difference of ``a`` and ``b`` as seen with ``vision`` (None: normal vision)."""
    la, lb = _linear(a), _linear(b)
    if vision:
        m = np.array(CVD[vision])
        la, lb = m @ la, m @ lb
    return float(np.linalg.norm(_lab(la) - _lab(lb)))


def test_every_label_has_a_colour_and_a_readable_text_colour():
    assert set(LABEL_COLORS) == set(LABELS) == set(LABEL_TEXT_COLORS)
    for label in LABELS:
        assert contrast_ratio(LABEL_TEXT_COLORS[label], LABEL_COLORS[label]) >= 4.5, label


@pytest.mark.parametrize("vision", [None, *CVD])
def test_no_two_label_colours_look_alike_with_normal_vision_or_colour_blindness(vision):
    worst = min(
        (_distance(LABEL_COLORS[a], LABEL_COLORS[b], vision), a, b) for a, b in itertools.combinations(LABELS, 2)
    )
    assert worst[0] >= 12, worst


def test_the_check_catches_the_old_category10_pairs_under_deuteranopia():
    """The old d3 colours of angry/happy and fear/sad merge for deuteranopes: the check above would have failed."""
    assert _distance(OLD_D3["angry"], OLD_D3["happy"], "deuteranopia") < 12
    assert _distance(OLD_D3["fear"], OLD_D3["sad"], "deuteranopia") < 12


def test_contrast_ratio_matches_the_wcag_reference_values():
    assert contrast_ratio("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#FFFFFF") == pytest.approx(4.48, abs=0.01)
