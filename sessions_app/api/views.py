"""REST API views (thin): validate input, look sessions up through the selectors, call services/report functions.

Every session lookup is scoped to the requesting user (teachers: own sessions; admins: all); another teacher's
session is a 404 exactly like a missing one. Errors use the body documented in ``sessions_app.api.exceptions``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_app import selectors
from sessions_app.api.exceptions import Conflict, error_body
from sessions_app.api.filters import SessionFilter
from sessions_app.api.permissions import visible_session_or_404
from sessions_app.api.serializers import (
    ErrorSerializer,
    ExportQuerySerializer,
    FaceSerializer,
    FacesQuerySerializer,
    ReportQuerySerializer,
    ReportSerializer,
    SessionCreateSerializer,
    SessionSerializer,
    TimelineQuerySerializer,
    TimelineSerializer,
    TokenResponseSerializer,
)
from sessions_app.reports import computations, exports
from sessions_app.reports import selectors as report_selectors
from sessions_app.services.exports import export_record_create
from sessions_app.services.sessions import session_create, session_end_if_running
from sessions_app.throttling import AuthRateThrottle, ExportRateThrottle, login_lockout_response

SESSION_ID = OpenApiParameter(
    "session_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Session id. Another teacher's session is 404."
)


def _error(description: str) -> OpenApiResponse:
    """A documented error response with the API's error body (``ErrorSerializer``) and ``description``."""
    return OpenApiResponse(ErrorSerializer, description=description)


E400 = _error("Invalid parameters: error.code 'invalid', error.details maps each parameter to its messages.")
E401 = _error("Not authenticated: send 'Authorization: Token <key>' or use the browser session.")
E403 = _error(
    "Forbidden (error.code 'permission_denied'): a browser-session request that changes data without a valid "
    "CSRF token (send the csrftoken cookie's value as the X-CSRFToken header, or use token authentication, which "
    "needs no CSRF token)."
)
E404 = _error("No such session, or a session of another teacher (never distinguished).")
E429 = _error("Rate limit exceeded; see the Retry-After header and error.details.retry_after_s.")


def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """404 for unknown paths under /api/, with the API's JSON error body (API paths end with a slash)."""
    body = error_body(code="not_found", message="No such API endpoint. API paths end with a slash.")
    return JsonResponse(body, status=404)


def _validated_query(serializer_class, request, context: dict | None = None) -> dict:
    """``request``'s query parameters validated by ``serializer_class``; raises ``ValidationError`` (400)."""
    serializer = serializer_class(data=request.query_params, context=context or {})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _validated_body(serializer_class, request) -> dict:
    """``request``'s body validated by ``serializer_class``; raises ``ValidationError`` (400)."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class TokenView(ObtainAuthToken):
    """POST username and password, get the user's API token (created on first use).

    Needs no authentication (and so no CSRF token); rate-limited per client IP (``AuthRateThrottle``, scope
    ``auth``). The client IP is the socket address unless ``API_NUM_PROXIES`` trusted proxies add
    ``X-Forwarded-For``.
    """

    authentication_classes: list = []
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        tags=["auth"],
        summary="Obtain an API token",
        description="Exchange username and password for the user's API token. Send it as "
        "`Authorization: Token <token>`. Rate-limited per client IP (scope `auth`).",
        responses={200: TokenResponseSerializer, 400: E400, 429: E429},
    )
    def post(self, request, *args, **kwargs):
        """Form or JSON body ``{"username", "password"}``; 200 ``{"token"}``, 400 on wrong credentials, 429 when
        throttled or when django-axes locked this username and client IP out (shared with the HTML login form)."""
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            if getattr(request, "axes_locked_out", False):
                return login_lockout_response(request._request)
            raise


@extend_schema(tags=["sessions"])
class SessionListCreateView(generics.ListCreateAPIView):
    """List the sessions visible to the user, or create one owned by the user."""

    serializer_class = SessionSerializer
    filterset_class = SessionFilter

    def get_queryset(self):
        """Sessions visible to the requesting user (teachers: own; admins: all), newest first."""
        return selectors.session_list_for_user(user=self.request.user).order_by("-created_at", "-id")

    @extend_schema(
        summary="List sessions",
        description="Teachers see their own sessions, admins all. Paginated (page, page_size up to 500).",
        responses={200: SessionSerializer(many=True), 400: E400, 401: E401, 404: _error("Page past the end.")},
    )
    def get(self, request, *args, **kwargs):
        """Filters (kind, owner, date_from, date_to), ordering and pagination come from the query string."""
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a session",
        description="Creates a running session owned by the requesting user; stream frames into it over the "
        "WebSocket or end it with POST .../end/.",
        request=SessionCreateSerializer,
        responses={201: SessionSerializer, 400: E400, 401: E401, 403: E403},
    )
    def post(self, request, *args, **kwargs):
        data = _validated_body(SessionCreateSerializer, request)
        try:
            session = session_create(owner=request.user, **data)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from None
        body = SessionSerializer(session, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(tags=["sessions"], parameters=[SESSION_ID])
class SessionDetailView(APIView):
    """One session visible to the user, with its counters and links (404 for another teacher's session)."""

    @extend_schema(summary="Retrieve a session", responses={200: SessionSerializer, 401: E401, 404: E404})
    def get(self, request, session_id):
        """The session with its frame counters, duration in seconds and links to its report and data."""
        session = visible_session_or_404(user=request.user, session_id=session_id)
        return Response(SessionSerializer(session, context={"request": request}).data)


@extend_schema(tags=["sessions"], parameters=[SESSION_ID])
class SessionEndView(APIView):
    """Ends a running session (owner or admin)."""

    @extend_schema(
        summary="End a running session",
        description="Marks the session ended (sets ended_at); live viewers are notified. Of concurrent requests "
        "exactly one succeeds; the others (and any later one) get 409.",
        request=None,
        responses={
            200: SessionSerializer,
            401: E401,
            403: E403,
            404: E404,
            409: _error("The session has already ended (error.code 'conflict')."),
        },
    )
    def post(self, request, session_id):
        """200 with the ended session when this request ended it; 409 ``conflict`` when it had already ended
        (decided by one conditional database update, so a concurrent request cannot make both succeed)."""
        session = visible_session_or_404(user=request.user, session_id=session_id)
        if not session_end_if_running(session=session):
            raise Conflict("The session has already ended.")
        return Response(SessionSerializer(session, context={"request": request}).data)


@extend_schema(tags=["results"], parameters=[SESSION_ID])
class SessionTimelineView(APIView):
    """The emotion timeline of a session in buckets of ``?bucket=`` seconds."""

    @extend_schema(
        summary="Emotion timeline",
        description="Per-bucket frame and face counts, mean probability per emotion, dominant emotion and "
        "valence. Bucket k covers [k*bucket, (k+1)*bucket) seconds since session start; only buckets with frames "
        "are listed. Emotion fields are null for buckets with fewer than min_faces faces.",
        parameters=[TimelineQuerySerializer],
        responses={200: TimelineSerializer, 400: E400, 401: E401, 404: E404},
    )
    def get(self, request, session_id):
        """``{"session_id", "bucket_s", "min_faces", "buckets": [...]}``; 400 for a bucket outside 1..3600 s."""
        session = visible_session_or_404(user=request.user, session_id=session_id)
        bucket_s = _validated_query(TimelineQuerySerializer, request)["bucket"]
        body = {
            "session_id": session.pk,
            "bucket_s": bucket_s,
            "min_faces": report_selectors.min_faces(),
            "buckets": selectors.session_timeline(session=session, bucket_s=bucket_s),
        }
        return Response(body)


@extend_schema(tags=["results"], parameters=[SESSION_ID])
class SessionReportView(APIView):
    """The numbers of a session's report page as JSON."""

    @extend_schema(
        summary="Session report",
        description="The numbers of the report page: counts, emotion distribution, timeline, dominant-emotion "
        "segments, moments of largest change and the plain-language summary. A bucket that would give more than "
        f"{computations.MAX_POINTS} timeline points for this session is refused (400).",
        parameters=[ReportQuerySerializer],
        responses={200: ReportSerializer, 400: E400, 401: E401, 404: E404},
    )
    def get(self, request, session_id):
        """The report (``ReportSerializer``); 400 for a bad or too small ``bucket`` (seconds)."""
        session = visible_session_or_404(user=request.user, session_id=session_id)
        bucket_s = _validated_query(ReportQuerySerializer, request, context={"session": session}).get("bucket")
        return Response(report_selectors.session_report(session=session, bucket_s=bucket_s).as_dict())


@extend_schema(tags=["results"], parameters=[SESSION_ID])
class SessionFacesView(generics.ListAPIView):
    """Per-face results of a session, in session-time order, paginated."""

    serializer_class = FaceSerializer
    filter_backends: list = []

    def get_queryset(self):
        """Faces of the visible session (404 otherwise) in the validated ``from_s``/``to_s`` range (seconds)."""
        session = visible_session_or_404(user=self.request.user, session_id=self.kwargs["session_id"])
        query = _validated_query(FacesQuerySerializer, self.request)
        return selectors.session_faces(session=session, from_s=query.get("from_s"), to_s=query.get("to_s"))

    @extend_schema(
        summary="Per-face results",
        description="One item per detected face: box in pixels, label, score and the 7 probabilities in [0, 1]. "
        "Filter by session time with from_s (inclusive) and to_s (exclusive), in seconds.",
        parameters=[FacesQuerySerializer],
        responses={200: FaceSerializer(many=True), 400: E400, 401: E401, 404: E404},
    )
    def get(self, request, *args, **kwargs):
        """One page of faces (``page``, ``page_size`` up to 500)."""
        return super().get(request, *args, **kwargs)


def streaming_download(request, chunks, *, content_type: str, filename: str) -> StreamingHttpResponse:
    """A download response that streams ``chunks`` (an iterator of bytes) in constant memory.

    Under ASGI the chunks are served through an async iterator; Django would otherwise gather a synchronous
    iterator into one list before sending.
    """
    django_request = getattr(request, "_request", request)
    body = exports.as_async_iterator(chunks) if isinstance(django_request, ASGIRequest) else chunks
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@extend_schema(tags=["results"], parameters=[SESSION_ID])
class SessionExportView(APIView):
    """Streams a whole session's results as CSV or JSON; audited and rate-limited per user (scope ``export``)."""

    throttle_classes = [ExportRateThrottle]

    def perform_content_negotiation(self, request, force=False):
        """Always JSON for error bodies: ``format`` is this endpoint's own parameter (csv|json), not DRF's
        renderer override. Returns ``(renderer, media_type)``."""
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        summary="Export a session",
        description="The whole session's frame and face results, streamed (constant memory). CSV: one row per "
        "face with its frame's columns; a frame without faces gives one row with empty face columns. JSON: "
        "{session, units, frames: [{..., faces: [...]}]}. Units: offset_s seconds since session start, "
        "processing_ms milliseconds, x/y/w/h/width/height pixels, score and p_* probabilities in [0, 1]. "
        "Every export is written to the audit log. Rate-limited per user (scope `export`).",
        parameters=[ExportQuerySerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV file (UTF-8, header row)."),
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="JSON document."),
            400: E400,
            401: E401,
            404: E404,
            429: E429,
        },
    )
    def get(self, request, session_id):
        """A streamed attachment ``session-<id>-<name>.<csv|json>``; the export is written to the audit log."""
        session = visible_session_or_404(user=request.user, session_id=session_id)
        fmt = _validated_query(ExportQuerySerializer, request)["format"]
        export_record_create(user=request.user, session=session, fmt=fmt)
        content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
        return streaming_download(
            request,
            exports.export_chunks(session=session, fmt=fmt),
            content_type=content_type,
            filename=exports.export_filename(session=session, fmt=fmt),
        )
