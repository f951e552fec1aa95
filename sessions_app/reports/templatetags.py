"""Template filters and tags of the report pages."""

from django import template
from django.utils.html import format_html

from sessions_app.reports.computations import format_duration

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """Seconds as ``"45 s"``, ``"12 min 5 s"``, ``"1 h 2 min"``."""
    return "–" if seconds is None else format_duration(float(seconds))


@register.filter
def pct(p) -> str:
    """A probability in [0, 1] as a percentage with one decimal: ``0.4083`` -> ``"40.8%"``."""
    return "–" if p is None else f"{float(p) * 100:.1f}%"


@register.filter
def percent_width(p) -> str:
    """A probability in [0, 1] as a CSS width percentage (``"40.83"``), clamped to 0..100."""
    return f"{min(max(float(p), 0.0), 1.0) * 100:.2f}"


@register.simple_tag
def sort_link(key: str, title: str, current: str, query: str) -> str:
    """Column header link that sorts by ``key`` (toggles descending when already sorted by it)."""
    active = current.lstrip("-") == key
    descending = current.startswith("-")
    new = f"-{key}" if active and not descending else key
    arrow = (" ▼" if descending else " ▲") if active else ""
    prefix = f"{query}&" if query else ""
    return format_html('<a href="?{}sort={}">{}{}</a>', prefix, new, title, arrow)


@register.filter
def pct0(p) -> str:
    """A share in [0, 1] as a whole percentage: ``0.4083`` -> ``"41%"``; ``"–"`` for ``None``."""
    return "–" if p is None else f"{float(p) * 100:.0f}%"


@register.filter
def valence_position(v) -> str:
    """A valence in [-1, 1] as a CSS left position in percent of a -1..1 scale: ``0.5`` -> ``"75.0"``."""
    return f"{(min(max(float(v), -1.0), 1.0) + 1.0) * 50:.1f}"


@register.filter
def signed2(v) -> str:
    """A number with sign and two decimals (``+0.63``, ``−0.20`` with a true minus sign); ``"–"`` for ``None``."""
    if v is None:
        return "–"
    return f"{float(v):+.2f}".replace("-", "\u2212")


@register.filter
def clock(seconds) -> str:
    """Seconds of session time as ``m:ss`` (``h:mm:ss`` from an hour): ``75`` -> ``"1:15"``."""
    if seconds is None:
        return "–"
    s = max(0, int(round(float(seconds))))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@register.filter
def get_item(mapping, key):
    """``mapping[key]`` in a template (``None`` when missing)."""
    return mapping.get(key) if hasattr(mapping, "get") else None
