"""Report pages (issue #4): the overview of sessions, a report per session, and its PDF.

Thin views: input is validated with small forms, numbers come from ``sessions_app.reports``, visibility from the
selectors (teachers: own sessions; admins: all; another teacher's session is a 404). Anonymous users are sent to
the login page.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET

from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import EmotionSession
from sessions_app.palette import HIDDEN_COLOR, LABEL_COLORS
from sessions_app.reports import computations, exports
from sessions_app.reports import selectors as reports
from sessions_app.reports.computations import timeline_chart
from sessions_app.services.exports import export_record_create
from sessions_app.throttling import ExportRateThrottle

#: Overview sort keys (column order of the table); see ``reports.OVERVIEW_SORTS``.
SORTS = list(reports.OVERVIEW_SORTS)


class OverviewForm(forms.Form):
    """Filters and sort order of the overview (all optional; bound to the query string).

    Fields: ``q`` (part of the session name or owner's username), ``kind``, ``owner`` (exact username; admins),
    ``date_from`` / ``date_to`` (inclusive creation dates, ISO ``YYYY-MM-DD``), ``sort`` (a key of
    ``reports.OVERVIEW_SORTS``, ``-`` prefixed for descending). ``cleaned_data`` maps directly onto the keyword
    arguments of ``reports.overview_sessions``.
    """

    q = forms.CharField(required=False, max_length=100, help_text="Part of the session name or owner's username.")
    kind = forms.ChoiceField(choices=[("", "any kind"), *EmotionSession.Kind.choices], required=False)
    owner = forms.CharField(required=False, max_length=150, help_text="Owner's username (admins).")
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(
        choices=[(f"{prefix}{key}", f"{prefix}{key}") for key in SORTS for prefix in ("", "-")], required=False
    )

    def clean(self) -> dict:
        """Cross-field check: ``date_from`` must not be after ``date_to`` (a form error, so a 400 page)."""
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date must not be after the end date.")
        return data


class BucketForm(forms.Form):
    """The optional ``?bucket=<seconds>`` of the report page and PDF.

    ``bucket``: timeline bucket length in whole seconds, 1..``reports.MAX_BUCKET_S``, and for the given ``session``
    no smaller than ``reports.min_bucket_s`` (at most ``reports.MAX_POINTS`` timeline points); absent = chosen
    automatically. Invalid input makes the form invalid (the views answer 400).
    """

    bucket = forms.IntegerField(required=False, min_value=1, max_value=computations.MAX_BUCKET_S)

    def __init__(self, *args, session: EmotionSession, **kwargs):
        """``session``: the session the report is for (its duration bounds the smallest bucket)."""
        super().__init__(*args, **kwargs)
        self.session = session

    def clean_bucket(self) -> int | None:
        """The bucket in seconds, or ``None``; raises ``ValidationError`` when it gives too many points."""
        bucket = self.cleaned_data.get("bucket")
        if bucket is not None:
            error = computations.bucket_error(session=self.session, bucket_s=bucket)
            if error:
                raise forms.ValidationError(error)
        return bucket


def _visible_session(request: HttpRequest, session_id: int) -> EmotionSession:
    try:
        return selectors.session_get_for_user(user=request.user, session_id=session_id)
    except EmotionSession.DoesNotExist:
        raise Http404("No such session.") from None


def _report_context(request: HttpRequest, session: EmotionSession, bucket_s: int | None) -> dict:
    """Template context of the report page and PDF; ``bucket_s`` (seconds, or ``None`` = automatic) is also
    passed on to the PDF link so the download shows the same timeline as the page."""
    report = reports.session_report(session=session, bucket_s=bucket_s)
    distribution = report.distribution
    rows = []
    if distribution["probabilities"] is not None:
        rows = [
            {"label": label, "p": distribution["probabilities"][label], "color": LABEL_COLORS[label]}
            for label in sorted(LABELS, key=lambda label: -distribution["probabilities"][label])
        ]
    api_export = reverse("api:session-export", kwargs={"session_id": session.pk})
    pdf = reverse("reports:session-report-pdf", kwargs={"session_id": session.pk})
    if bucket_s is not None:
        pdf = f"{pdf}?{urlencode({'bucket': bucket_s})}"
    # alerts are judged on the fine live buckets (FER_CHART_BUCKET_S), whatever the report's bucket
    fine_s = settings.FER_CHART_BUCKET_S
    fine = report.timeline
    if report.bucket_s != fine_s:
        fine = selectors.session_timeline(session=session, bucket_s=fine_s)
    return {
        "session": session,
        "report": report,
        "alerts": computations.session_alerts(session, fine),
        "mood": computations.mood_word(
            computations.valence_of(distribution["probabilities"]) if distribution["probabilities"] else None
        ),
        "overall_valence": (
            computations.valence_of(distribution["probabilities"]) if distribution["probabilities"] else None
        ),
        "overall_arousal": selectors.arousal_of_shares(distribution["probabilities"]),
        "hidden_color": HIDDEN_COLOR,
        "distribution_rows": rows,
        "chart": timeline_chart(report.timeline, bucket_s=report.bucket_s),
        "label_colors": [{"label": label, "color": LABEL_COLORS[label]} for label in LABELS],
        "links": {
            "pdf": pdf,
            "csv": f"{api_export}?format=csv",
            "json": f"{api_export}?format=json",
            "dashboard": reverse("sessions_app:session-dashboard", kwargs={"session_id": session.pk}),
        },
    }


@login_required
@require_GET
def report_overview(request: HttpRequest) -> HttpResponse:
    """``/reports/``: sessions visible to the user with summary columns (owner, kind, date, duration, mean faces,
    dominant emotion); search (``q``: name or owner), filter by kind, owner (admins) and dates; sort by any column
    (``?sort=duration``, ``-duration``, ``dominant``, ...). 50 per page (``?page=``).

    Returns the HTML page: 200, or 400 (with the form errors and no rows) for invalid parameters; anonymous users
    are redirected to the login page. Filtering and sorting are ``reports.overview_sessions``.
    """
    form = OverviewForm(request.GET or None)
    valid = not form.is_bound or form.is_valid()
    filters = {key: value for key, value in form.cleaned_data.items() if value} if form.is_bound and valid else {}
    sort = filters.get("sort", "-date")
    if valid:
        sessions = reports.overview_sessions(user=request.user, **filters)
    else:
        sessions = reports.overview_queryset(user=request.user).none()
    page = Paginator(sessions, 50).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    params.pop("sort", None)
    context = {
        "form": form,
        "page": page,
        "rows": reports.overview_rows(sessions=page.object_list),
        "sort": sort,
        "sorts": SORTS,
        "query": params.urlencode(),
        "owners": reports.overview_owner_names(user=request.user),
        "min_faces": reports.min_faces(),
    }
    return render(request, "reports/overview.html", context, status=200 if valid else 400)


@login_required
@require_GET
def session_report(request: HttpRequest, session_id: int) -> HttpResponse:
    """``/reports/sessions/<id>/``: the report page (``?bucket=<seconds>`` optional, else chosen automatically).

    Returns 200 with the page; 400 for a bad ``bucket`` (see ``BucketForm``); 404 for a missing session or another
    teacher's; a redirect to the login page for anonymous users.
    """
    session = _visible_session(request, session_id)
    form = BucketForm(request.GET, session=session)
    if not form.is_valid():
        return render(request, "reports/bad_request.html", {"errors": form.errors}, status=400)
    context = _report_context(request, session, form.cleaned_data.get("bucket"))
    return render(request, "reports/session_report.html", context)


def report_pdf_bytes(*, request: HttpRequest, session: EmotionSession, bucket_s: int | None = None) -> bytes:
    """Render the session report as PDF with WeasyPrint (no network access: styles are inline).

    Args:
        request: the current request (for the template context).
        session: a session the user may see.
        bucket_s: timeline bucket in seconds, already validated (``BucketForm``); ``None`` = automatic.
    Returns:
        The PDF document's bytes.
    """
    from weasyprint import HTML  # imported lazily: needs the system's Pango

    html = render_to_string("reports/session_report_pdf.html", _report_context(request, session, bucket_s), request)
    return HTML(string=html, base_url=None).write_pdf()


@login_required
@require_GET
def session_report_pdf(request: HttpRequest, session_id: int) -> HttpResponse:
    """``/reports/sessions/<id>/pdf/``: the report as a PDF download (``?bucket=<seconds>`` as on the page);
    recorded in the export audit log and rate-limited per user like the API's exports (scope ``export``).

    Returns 200 ``application/pdf`` attachment ``report-<id>-<name>.pdf``; 400 for a bad ``bucket``; 404 for a
    missing or foreign session; 429 with ``Retry-After`` (seconds) when the export rate is exceeded.
    """
    session = _visible_session(request, session_id)
    form = BucketForm(request.GET, session=session)
    if not form.is_valid():
        return render(request, "reports/bad_request.html", {"errors": form.errors}, status=400)
    throttle = ExportRateThrottle()
    if not throttle.allow_request(request, None):
        wait = int((throttle.wait() or 0) + 0.999)
        response = render(request, "reports/throttled.html", {"retry_after_s": wait}, status=429)
        response["Retry-After"] = str(wait)
        return response
    pdf = report_pdf_bytes(request=request, session=session, bucket_s=form.cleaned_data.get("bucket"))
    export_record_create(user=request.user, session=session, fmt="pdf")
    response = HttpResponse(pdf, content_type="application/pdf")
    filename = exports.export_filename(session=session, fmt="pdf").replace("session-", "report-", 1)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
