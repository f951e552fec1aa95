"""Thin web views: they parse input, call selectors/services and render templates."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import NEGATIVE_LABELS, EmotionSession
from sessions_app.palette import HIDDEN_COLOR, LABEL_COLORS, LABEL_TEXT_COLORS
from sessions_app.reports import computations
from sessions_app.services import sessions as session_services
from sessions_app.services import uploads as upload_services
from sessions_app.web.forms import CompareForm, SessionCreateForm, SessionSettingsForm, UploadForm


def _get_session(request: HttpRequest, session_id: int) -> EmotionSession:
    try:
        return selectors.session_get_for_user(user=request.user, session_id=session_id)
    except EmotionSession.DoesNotExist:
        raise Http404("No such session.") from None


def _own_session(request: HttpRequest, session_id: int) -> EmotionSession:
    """A session the user owns (404 otherwise, also for staff: they watch, they do not manage others' sessions)."""
    session = _get_session(request, session_id)
    if not selectors.session_can_stream(user=request.user, session=session):
        raise Http404("No such session.")
    return session


def _chart_config(request: HttpRequest, session: EmotionSession) -> dict:
    return {
        "session_id": session.pk,
        "kind": session.kind,
        "labels": list(LABELS),
        "negative_labels": list(NEGATIVE_LABELS),
        "colors": LABEL_COLORS,
        "text_colors": LABEL_TEXT_COLORS,
        "hidden_color": HIDDEN_COLOR,
        "bucket_s": settings.FER_CHART_BUCKET_S,
        "min_faces": settings.FER_MIN_FACES_FOR_AGGREGATES,
        "mood_window_s": computations.MOOD_WINDOW_S,
        "timeline_url": reverse("sessions_app:session-timeline-json", args=[session.pk]),
    }


def _glance(session: EmotionSession, timeline: list[dict]) -> dict:
    """Mood at a glance of ``session`` from its fine timeline: ``{"mood": computations.mood_now, "people":
    selectors.session_people_now, "attention": computations.attention_now, "alerts": computations.session_alerts}``."""
    return {
        "mood": computations.mood_now(timeline),
        "attention": computations.attention_now(timeline),
        "people": selectors.session_people_now(session=session),
        "alerts": computations.session_alerts(session, timeline),
    }


def _page_range(page) -> list:
    """Page numbers around the current page, with ``None`` for elided stretches."""
    return list(page.paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1))


@login_required
@require_http_methods(["GET"])
def session_list(request: HttpRequest) -> HttpResponse:
    """Sessions visible to the user (``FER_SESSIONS_PER_PAGE`` per page, ``?page=``) and the create form."""
    return _list_page(request, SessionCreateForm())


def _list_page(request: HttpRequest, form, status: int = 200) -> HttpResponse:
    sessions = selectors.session_list_for_user(user=request.user)
    page = Paginator(sessions, settings.FER_SESSIONS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"sessions": page.object_list, "page": page, "page_range": _page_range(page), "form": form}
    return render(request, "sessions_app/session_list.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def session_create(request: HttpRequest) -> HttpResponse:
    """Create a session (POST) and open its live page; GET shows the form."""
    form = SessionCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                session = session_services.session_create(owner=request.user, **form.session_fields())
                session_services.session_settings_update(
                    session=session,
                    operator_name=form.cleaned_data.get("operator_name") or "",
                    lawful_use_confirmed=form.cleaned_data["lawful_use_confirmed"],
                    **form.alert_settings(),
                )
                session_services.session_notice_code_ensure(session=session)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("sessions_app:session-live", session_id=session.pk)
    return _list_page(request, form, status=400 if request.method == "POST" else 200)


@login_required
def session_live(request: HttpRequest, session_id: int) -> HttpResponse:
    """Live page. Everyone who may see a running session watches its live results (``/watch/`` socket, no camera):
    the owner in any tab, staff; the owner can also start the camera here (``/stream/`` socket, see ``live.js``)."""
    session = _get_session(request, session_id)
    can_stream = selectors.session_can_stream(user=request.user, session=session)
    config = {
        **_chart_config(request, session),
        "can_stream": can_stream and session.status == EmotionSession.Status.RUNNING,
        "running": session.status == EmotionSession.Status.RUNNING,
        "target_fps": session.target_fps,
        "stream_path": f"/ws/sessions/{session.pk}/stream/",
        "watch_path": f"/ws/sessions/{session.pk}/watch/",
        "dashboard_url": reverse("sessions_app:session-dashboard", args=[session.pk]),
    }
    notice_url = None
    if can_stream and not session.notice_code:  # sessions created through the API or before issue 12
        session_services.session_notice_code_ensure(session=session)
    if session.notice_code:
        notice_url = request.build_absolute_uri(reverse("sessions_app:notice", args=[session.notice_code]))
    config["notice_url"] = notice_url
    fine = selectors.session_timeline(session=session, bucket_s=settings.FER_CHART_BUCKET_S)
    return render(
        request,
        "sessions_app/session_live.html",
        {
            "session": session,
            "config": config,
            "glance": _glance(session, fine),
            "notice_url": notice_url,
            "idle_end_s": settings.FER_SESSION_IDLE_END_S,
        },
    )


@login_required
def session_dashboard(request: HttpRequest, session_id: int) -> HttpResponse:
    """Dashboard of a session: summary, timeline, distribution, dominant emotion and face count per bucket."""
    session = _get_session(request, session_id)
    bucket_s = settings.FER_CHART_BUCKET_S
    timeline = selectors.session_timeline(session=session, bucket_s=bucket_s)
    glance = _glance(session, timeline)
    data = {
        **_chart_config(request, session),
        "timeline": timeline,
        "distribution": selectors.session_distribution(session=session),
        "running": session.status == EmotionSession.Status.RUNNING,
        **glance,
    }
    upload = None
    source = request.GET.get("upload", "")
    if re.fullmatch(r"upload:\d{1,9}", source):
        try:
            expected = max(1, int(request.GET.get("frames", "1")))
        except ValueError:
            expected = 1
        upload = {"source": source, "expected": expected, "sampling": request.GET.get("sampling", "")}
        data["upload"] = upload
    summary = selectors.session_summary(session=session)
    # the table stays readable for long sessions: at most ~120 rows (a 45-min lesson: 30 s rows, not 540 of 5 s)
    table_bucket_s = max(bucket_s, computations.choose_bucket_s(summary["duration_s"]))
    table = timeline
    if table_bucket_s != bucket_s:
        table = selectors.session_timeline(session=session, bucket_s=table_bucket_s)
    return render(
        request,
        "sessions_app/session_dashboard.html",
        {
            "session": session,
            "summary": summary,
            "data": data,
            "timeline": timeline,
            "table": table,
            "table_bucket_s": table_bucket_s,
            "glance": glance,
            "upload": upload,
            "crowd": session.kind == EmotionSession.Kind.CROWD,
            "can_stream": selectors.session_can_stream(user=request.user, session=session),
        },
    )


@login_required
def session_timeline_json(request: HttpRequest, session_id: int) -> JsonResponse:
    """``{"timeline": [...], "distribution": {...}, "summary": {...}, "mood": {...}, "people": {...},
    "alerts": {...}}`` for the live chart (``?bucket=<s>``) and the mood at a glance; with ``?source=upload:<n>`` also
    ``"upload": {"source", "frames": int (stored so far)}``. ``mood``/``alerts`` always use the fine
    ``FER_CHART_BUCKET_S`` buckets (see ``computations.mood_now`` and ``computations.session_alerts``)."""
    session = _get_session(request, session_id)
    try:
        bucket_s = min(3600, max(1, int(request.GET.get("bucket", settings.FER_CHART_BUCKET_S))))
    except ValueError:
        bucket_s = settings.FER_CHART_BUCKET_S
    summary = selectors.session_summary(session=session)
    summary["ended_at"] = summary["ended_at"].isoformat() if summary["ended_at"] else None
    timeline = selectors.session_timeline(session=session, bucket_s=bucket_s)
    fine = (
        timeline
        if bucket_s == settings.FER_CHART_BUCKET_S
        else selectors.session_timeline(session=session, bucket_s=settings.FER_CHART_BUCKET_S)
    )
    body = {
        "timeline": timeline,
        "distribution": selectors.session_distribution(session=session),
        "summary": summary,
        **_glance(session, fine),
    }
    source = request.GET.get("source", "")
    if re.fullmatch(r"upload:\d{1,9}", source):
        body["upload"] = {"source": source, "frames": selectors.session_upload_progress(session=session, source=source)}
    return JsonResponse(body)


@login_required
@require_http_methods(["GET", "POST"])
def session_upload(request: HttpRequest, session_id: int) -> HttpResponse:
    """Upload a photo or short video into one of the user's own sessions."""
    session = _own_session(request, session_id)
    ended = session.status != EmotionSession.Status.RUNNING
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = upload_services.upload_process(session=session, uploaded_file=form.cleaned_data["file"])
        except upload_services.UploadRejected as exc:
            form.add_error("file", str(exc))
        else:
            sampling = _sampling_text(result, session)
            messages.success(request, f"Queued {result['frames']} frame(s) from the {result['kind']} for analysis.")
            url = reverse("sessions_app:session-dashboard", args=[session.pk])
            query = QueryDict(mutable=True)
            query.update({"upload": result["source"], "frames": result["frames"], "sampling": sampling})
            return redirect(f"{url}?{query.urlencode()}")
    status = 400 if request.method == "POST" else (409 if ended else 200)
    context = {
        "session": session,
        "form": form,
        "ended": ended,
        "max_frames": settings.FER_MAX_UPLOAD_FRAMES,
        "max_mb": settings.FER_MAX_UPLOAD_BYTES // 1_000_000,
    }
    return render(request, "sessions_app/session_upload.html", context, status=status)


def _sampling_text(result: dict, session: EmotionSession) -> str:
    """One sentence on how an upload was sampled (shown on the dashboard while it is analysed)."""
    if result["kind"] == "image":
        return "The photo is one frame at the upload time."
    length = computations.format_duration(result["video_s"]) if result["video_s"] else "unknown length"
    if result["spread"]:
        return (
            f"The video ({length}) is longer than {result['frames']} frames at {session.target_fps:g} fps, so "
            f"{result['frames']} frames were taken evenly over its whole length, one every {result['step_s']:g} s."
        )
    return (
        f"The video ({length}) was sampled at the session rate, one frame every {result['step_s']:g} s; "
        "frames are placed on the video's own timeline from the session's start."
    )


@login_required
@require_POST
def session_end(request: HttpRequest, session_id: int) -> HttpResponse:
    """End one of the user's own sessions (idempotent) and open its dashboard."""
    session = _get_session(request, session_id)
    if not (selectors.session_can_stream(user=request.user, session=session) or request.user.is_staff):
        raise Http404("No such session.")
    session_services.session_end(session=session)
    return redirect("sessions_app:session-dashboard", session_id=session.pk)


@login_required
@require_http_methods(["GET", "POST"])
def session_settings(request: HttpRequest, session_id: int) -> HttpResponse:
    """Rename one of the user's own sessions, change who runs it and its alert (GET: the form; POST: save and go to
    the dashboard; 400 with errors)."""
    session = _own_session(request, session_id)
    form = SessionSettingsForm(request.POST or None, instance=session)
    if request.method == "POST" and form.is_valid():
        try:
            session_services.session_rename(session=session, name=form.cleaned_data["name"])
            session_services.session_settings_update(
                session=session,
                operator_name=form.cleaned_data.get("operator_name") or "",
                lawful_use_confirmed=bool(form.cleaned_data.get("lawful_use_confirmed")),
                **form.alert_settings(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Settings saved.")
            return redirect("sessions_app:session-dashboard", session_id=session.pk)
    session.refresh_from_db()
    status = 400 if request.method == "POST" else 200
    context = {"session": session, "form": form, "retention_days": settings.FER_RETENTION_DAYS}
    return render(request, "sessions_app/session_settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def session_delete(request: HttpRequest, session_id: int) -> HttpResponse:
    """Delete one of the user's own ended sessions and all its results (GET: confirmation page; POST: delete and go
    to the list; 409 for a running session)."""
    session = _own_session(request, session_id)
    running = session.status == EmotionSession.Status.RUNNING
    if request.method == "POST" and not running:
        name = session.name
        session_services.session_delete(session=session)
        messages.success(request, f"Deleted “{name}” and all its results.")
        return redirect("sessions_app:session-list")
    counts = selectors.session_summary(session=session)
    context = {"session": session, "running": running, "summary": counts, "retention_days": settings.FER_RETENTION_DAYS}
    return render(request, "sessions_app/session_delete.html", context, status=409 if running else 200)


@require_GET
def notice(request: HttpRequest, code: str) -> HttpResponse:
    """Public, printable participant notice of a session (``/n/<code>/``, no login: it is for the people in front of
    the camera): what is analysed, that no image is stored, retention, who runs it, the legal note. 404 for an unknown
    code."""
    session = selectors.session_by_notice_code(code=code)
    if session is None:
        raise Http404("No such notice.")
    context = {
        "session": session,
        "operator": session.operator_name or session.owner.get_full_name() or session.owner.get_username(),
        "retention_days": settings.FER_RETENTION_DAYS,
        "min_faces": settings.FER_MIN_FACES_FOR_AGGREGATES,
        "idle_end_s": settings.FER_SESSION_IDLE_END_S,
        "notice_url": request.build_absolute_uri(),
        "rate_text": _rate_text(session.target_fps),
    }
    return render(request, "sessions_app/notice.html", context)


def _rate_text(fps: float) -> str:
    """How often the camera sends a picture, in words: "2 pictures a second", "one picture every 5 s"."""
    if fps >= 1.5:
        return f"{fps:.0f} pictures a second"
    if fps >= 1:
        return "one picture a second"
    return f"one picture every {1 / fps:.0f} s"


@login_required
@require_GET
def session_compare(request: HttpRequest) -> HttpResponse:
    """Two to six of the user's visible sessions side by side (``?ids=1&ids=2``: valence, negative share,
    distribution, people), and the per-teacher trend: valence and people of the user's own sessions, oldest first
    (at most the newest 100). Without ``ids`` (or with a bad choice) the page shows the picker (400 for bad ids)."""
    visible = list(selectors.session_list_for_user(user=request.user)[:200])
    form = CompareForm(request.GET or None, sessions=visible)
    rows = []
    if form.is_bound and form.is_valid():
        by_id = {s.pk: s for s in visible}
        rows = selectors.sessions_compare(sessions=[by_id[i] for i in form.cleaned_data["ids"]])
    own = [s for s in visible if s.owner_id == request.user.pk][:100]
    trend = selectors.sessions_compare(sessions=list(reversed(own)))
    for row in (*rows, *trend):
        row["mood"] = computations.mood_word(row["valence"])
    trend_points = [
        {
            "id": r["session"].pk,
            "name": r["session"].name,
            "created_at": r["session"].created_at.isoformat(),
            "valence": r["valence"],
            "people": r["mean_people"],
        }
        for r in trend
    ]
    context = {
        "form": form,
        "visible": visible,
        "rows": rows,
        "trend": trend,
        "chart": {
            "labels": list(LABELS),
            "colors": LABEL_COLORS,
            "rows": [
                {"name": r["session"].name, "probabilities": r["probabilities"]} for r in rows if r["probabilities"]
            ],
            "trend": trend_points,
        },
        "min_faces": settings.FER_MIN_FACES_FOR_AGGREGATES,
        "selected": set(form.cleaned_data["ids"]) if form.is_bound and form.is_valid() else set(),
    }
    return render(request, "sessions_app/session_compare.html", context, status=400 if form.errors else 200)
