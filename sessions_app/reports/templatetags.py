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
