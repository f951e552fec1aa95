"""Report pages (issue #4): the overview of sessions, a report per session, and its PDF.

Thin views: input is validated with small forms, numbers come from ``sessions_app.reports``, visibility from the
selectors (teachers: own sessions; admins: all; another teacher's session is a 404). Anonymous users are sent to
the login page.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import F, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET

from inference.labels import LABELS
from sessions_app import exports, reports, selectors
from sessions_app.api.throttling import ExportRateThrottle
from sessions_app.models import EmotionSession
from sessions_app.views import LABEL_COLORS  # one palette for dashboards and reports

#: Overview sort keys -> ORDER BY fields.
SORTS = {
    "date": "created_at",
    "owner": "owner__username",
    "kind": "kind",
    "duration": "duration",
    "mean_faces": "mean_faces",
    "name": "name",
}


class OverviewForm(forms.Form):
    """Filters and sort order of the overview (all optional)."""

    q = forms.CharField(required=False, max_length=100, help_text="Part of the session name or owner's username.")
    kind = forms.ChoiceField(choices=[("", "any kind"), *EmotionSession.Kind.choices], required=False)
    owner = forms.CharField(required=False, max_length=150, help_text="Owner's username (admins).")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(
        choices=[(f"{prefix}{key}", f"{prefix}{key}") for key in SORTS for prefix in ("", "-")], required=False
    )

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date must not be after the end date.")
        return data


class BucketForm(forms.Form):
    bucket = forms.IntegerField(required=False, min_value=1, max_value=reports.MAX_BUCKET_S)


def _visible_session(request: HttpRequest, session_id: int) -> EmotionSession:
    try:
        return selectors.session_get_for_user(user=request.user, session_id=session_id)
    except EmotionSession.DoesNotExist:
        raise Http404("No such session.") from None


def timeline_chart(timeline: list[dict], *, bucket_s: int, width: int = 720, height: int = 200) -> dict:
    """Geometry of the stacked timeline chart drawn as inline SVG (works in the browser and in the PDF).

    One column per bucket, stacked by mean probability per emotion (100% = column height); buckets with too few
    faces are grey. Returns ``{"width", "height", "columns": [{"x", "w", "title", "rects": [{"y", "h",
    "color"}], "hidden"}], "ticks": [{"x", "label", "anchor"}]}`` (pixels of the SVG viewBox).
    """
    if not timeline:
        return {"width": width, "height": height, "columns": [], "ticks": []}
    end_s = max(item["end_s"] for item in timeline)
    scale = width / end_s
    columns = []
    for item in timeline:
        x = item["start_s"] * scale
        w = max(bucket_s * scale - 0.5, 0.5)
        column = {"x": round(x, 2), "w": round(w, 2), "hidden": item["probabilities"] is None, "rects": []}
        if item["probabilities"] is None:
            column["title"] = f"{item['start_s']}-{item['end_s']} s: fewer than the minimum faces"
        else:
            column["title"] = f"{item['start_s']}-{item['end_s']} s: " + ", ".join(
                f"{label} {item['probabilities'][label] * 100:.0f}%" for label in LABELS
            )
            y = 0.0
            for label in LABELS:
                h = item["probabilities"][label] * height
                column["rects"].append({"y": round(y, 2), "h": round(h, 2), "color": LABEL_COLORS[label]})
                y += h
        columns.append(column)
    step = reports.choose_bucket_s(end_s, target_points=6)
    ticks = [
        {
            "x": round(t * scale, 2),
            "label": reports.format_duration(t),
            "anchor": "start" if t == 0 else ("end" if t * scale > width - 30 else "middle"),
        }
        for t in range(0, end_s + 1, step)
    ]
    return {"width": width, "height": height, "columns": columns, "ticks": ticks}


def _report_context(request: HttpRequest, session: EmotionSession, bucket_s: int | None) -> dict:
    report = reports.session_report(session=session, bucket_s=bucket_s)
    distribution = report.distribution
    rows = []
    if distribution["probabilities"] is not None:
        rows = [
            {"label": label, "p": distribution["probabilities"][label], "color": LABEL_COLORS[label]}
            for label in sorted(LABELS, key=lambda label: -distribution["probabilities"][label])
        ]
    api_export = reverse("api:session-export", kwargs={"session_id": session.pk})
    return {
        "session": session,
        "report": report,
        "distribution_rows": rows,
        "chart": timeline_chart(report.timeline, bucket_s=report.bucket_s),
        "label_colors": [{"label": label, "color": LABEL_COLORS[label]} for label in LABELS],
        "links": {
            "pdf": reverse("reports:session-report-pdf", kwargs={"session_id": session.pk}),
            "csv": f"{api_export}?format=csv",
            "json": f"{api_export}?format=json",
            "dashboard": f"/sessions/{session.pk}/",
        },
    }


@login_required
@require_GET
def report_overview(request: HttpRequest) -> HttpResponse:
    """``/reports/``: sessions visible to the user with summary columns; search (``q``: name or owner), filter by
    kind, owner (admins) and dates; sort by any column (``?sort=duration``, ``-duration``, ...). 50 per page."""
    form = OverviewForm(request.GET or None)
    sessions = reports.overview_queryset(user=request.user)
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400
        sessions = sessions.none()
    data = form.cleaned_data if form.is_bound and form.is_valid() else {}
    if data.get("q"):
        sessions = sessions.filter(Q(name__icontains=data["q"]) | Q(owner__username__icontains=data["q"]))
    if data.get("kind"):
        sessions = sessions.filter(kind=data["kind"])
    if data.get("owner"):
        sessions = sessions.filter(owner__username=data["owner"])
    if data.get("date_from"):
        sessions = sessions.filter(created_at__date__gte=data["date_from"])
    if data.get("date_to"):
        sessions = sessions.filter(created_at__date__lte=data["date_to"])
    sort = data.get("sort") or "-date"
    field = SORTS[sort.lstrip("-")]
    descending = sort.startswith("-")
    order = f"-{field}" if descending else field
    if field in {"mean_faces", "duration"}:
        order = F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True)
    sessions = sessions.order_by(order, "-id")
    page = Paginator(sessions, 50).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    params.pop("sort", None)
    owners = []
    if request.user.is_staff:
        owners = (
            get_user_model()
            .objects.filter(emotion_sessions__isnull=False)
            .distinct()
            .order_by("username")
            .values_list("username", flat=True)
        )
    context = {
        "form": form,
        "page": page,
        "rows": reports.overview_rows(sessions=page.object_list),
        "sort": sort,
        "sorts": list(SORTS),
        "query": params.urlencode(),
        "owners": owners,
        "min_faces": reports.min_faces(),
    }
    return render(request, "reports/overview.html", context, status=status)


@login_required
@require_GET
def session_report(request: HttpRequest, session_id: int) -> HttpResponse:
    """``/reports/sessions/<id>/``: the report page (``?bucket=<seconds>`` optional, else chosen automatically)."""
    session = _visible_session(request, session_id)
    form = BucketForm(request.GET)
    if not form.is_valid():
        return render(request, "reports/bad_request.html", {"errors": form.errors}, status=400)
    context = _report_context(request, session, form.cleaned_data.get("bucket"))
    return render(request, "reports/session_report.html", context)


def report_pdf_bytes(*, request: HttpRequest, session: EmotionSession, bucket_s: int | None = None) -> bytes:
    """Render the session report as PDF with WeasyPrint (no network access: styles are inline)."""
    from weasyprint import HTML  # imported lazily: needs the system's Pango

    html = render_to_string("reports/session_report_pdf.html", _report_context(request, session, bucket_s), request)
    return HTML(string=html, base_url=None).write_pdf()


@login_required
@require_GET
def session_report_pdf(request: HttpRequest, session_id: int) -> HttpResponse:
    """``/reports/sessions/<id>/pdf/``: the report as a PDF download; recorded in the export audit log and
    rate-limited per user like the API's exports (scope ``export``; 429 when exceeded)."""
    session = _visible_session(request, session_id)
    form = BucketForm(request.GET)
    if not form.is_valid():
        return render(request, "reports/bad_request.html", {"errors": form.errors}, status=400)
    throttle = ExportRateThrottle()
    if not throttle.allow_request(request, None):
        wait = int((throttle.wait() or 0) + 0.999)
        response = render(request, "reports/throttled.html", {"retry_after_s": wait}, status=429)
        response["Retry-After"] = str(wait)
        return response
    pdf = report_pdf_bytes(request=request, session=session, bucket_s=form.cleaned_data.get("bucket"))
    exports.export_record_create(user=request.user, session=session, fmt="pdf")
    response = HttpResponse(pdf, content_type="application/pdf")
    filename = exports.export_filename(session=session, fmt="pdf").replace("session-", "report-", 1)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
