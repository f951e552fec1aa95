"""Thin web views: they parse input, call selectors/services and render templates."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import EmotionSession
from sessions_app.palette import LABEL_COLORS
from sessions_app.services import sessions as session_services
from sessions_app.services import uploads as upload_services
from sessions_app.web.forms import SessionCreateForm, UploadForm


def _get_session(request: HttpRequest, session_id: int) -> EmotionSession:
    try:
        return selectors.session_get_for_user(user=request.user, session_id=session_id)
    except EmotionSession.DoesNotExist:
        raise Http404("No such session.") from None


def _chart_config(request: HttpRequest, session: EmotionSession) -> dict:
    return {
        "session_id": session.pk,
        "labels": list(LABELS),
        "colors": LABEL_COLORS,
        "bucket_s": settings.FER_CHART_BUCKET_S,
        "min_faces": settings.FER_MIN_FACES_FOR_AGGREGATES,
        "timeline_url": reverse("sessions_app:session-timeline-json", args=[session.pk]),
    }


@login_required
@require_http_methods(["GET"])
def session_list(request: HttpRequest) -> HttpResponse:
    """Sessions visible to the user and the create form."""
    sessions = selectors.session_list_for_user(user=request.user)
    return render(request, "sessions_app/session_list.html", {"sessions": sessions, "form": SessionCreateForm()})


@login_required
@require_http_methods(["GET", "POST"])
def session_create(request: HttpRequest) -> HttpResponse:
    """Create a session (POST) and open its live page; GET shows the form."""
    form = SessionCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            session = session_services.session_create(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("sessions_app:session-live", session_id=session.pk)
    sessions = selectors.session_list_for_user(user=request.user)
    status = 400 if request.method == "POST" else 200
    return render(request, "sessions_app/session_list.html", {"sessions": sessions, "form": form}, status=status)


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
    return render(request, "sessions_app/session_live.html", {"session": session, "config": config})


@login_required
def session_dashboard(request: HttpRequest, session_id: int) -> HttpResponse:
    """Dashboard of a session: summary, timeline, distribution, dominant emotion and face count per bucket."""
    session = _get_session(request, session_id)
    bucket_s = settings.FER_CHART_BUCKET_S
    data = {
        **_chart_config(request, session),
        "timeline": selectors.session_timeline(session=session, bucket_s=bucket_s),
        "distribution": selectors.session_distribution(session=session),
    }
    summary = selectors.session_summary(session=session)
    return render(
        request,
        "sessions_app/session_dashboard.html",
        {
            "session": session,
            "summary": summary,
            "data": data,
            "timeline": data["timeline"],
            "can_stream": selectors.session_can_stream(user=request.user, session=session),
        },
    )


@login_required
def session_timeline_json(request: HttpRequest, session_id: int) -> JsonResponse:
    """``{"timeline": [...], "distribution": {...}, "summary": {...}}`` for the live chart (``?bucket=<s>``)."""
    session = _get_session(request, session_id)
    try:
        bucket_s = min(3600, max(1, int(request.GET.get("bucket", settings.FER_CHART_BUCKET_S))))
    except ValueError:
        bucket_s = settings.FER_CHART_BUCKET_S
    summary = selectors.session_summary(session=session)
    summary["ended_at"] = summary["ended_at"].isoformat() if summary["ended_at"] else None
    return JsonResponse(
        {
            "timeline": selectors.session_timeline(session=session, bucket_s=bucket_s),
            "distribution": selectors.session_distribution(session=session),
            "summary": summary,
        }
    )


@login_required
@require_http_methods(["GET", "POST"])
def session_upload(request: HttpRequest, session_id: int) -> HttpResponse:
    """Upload a photo or short video into one of the user's own sessions."""
    session = _get_session(request, session_id)
    if not selectors.session_can_stream(user=request.user, session=session):
        raise Http404("No such session.")
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = upload_services.upload_process(session=session, uploaded_file=form.cleaned_data["file"])
        except upload_services.UploadRejected as exc:
            form.add_error("file", str(exc))
        else:
            messages.success(
                request, f"Queued {result['frames']} frame(s) from the {result['kind']} as {result['source']}."
            )
            return redirect("sessions_app:session-dashboard", session_id=session.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "sessions_app/session_upload.html", {"session": session, "form": form}, status=status)


@login_required
@require_POST
def session_end(request: HttpRequest, session_id: int) -> HttpResponse:
    """End one of the user's own sessions (idempotent) and open its dashboard."""
    session = _get_session(request, session_id)
    if not (selectors.session_can_stream(user=request.user, session=session) or request.user.is_staff):
        raise Http404("No such session.")
    session_services.session_end(session=session)
    return redirect("sessions_app:session-dashboard", session_id=session.pk)
