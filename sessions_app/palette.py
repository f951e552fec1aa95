"""One colour per emotion label, shared by the live page, dashboards, reports and PDFs."""

#: Chart colour per label (d3 category10), keyed by the ``LABELS`` names.
LABEL_COLORS: dict[str, str] = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#2ca02c",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#7f7f7f",
}
