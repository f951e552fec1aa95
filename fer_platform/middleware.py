"""Request guards that run before any view or CSRF check reads a request body."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class AnonymousBodyLimitMiddleware:
    """Refuse request bodies over ``settings.FER_MAX_ANONYMOUS_BODY_BYTES`` from clients that are not logged in,
    before anything parses them (Django's CSRF check would otherwise parse a multipart upload to look for its token).

    Anonymous clients only ever need to POST small bodies (the login form, the API token request). A request with an
    ``Authorization`` header is left to the API's token authentication. Answers 413 (JSON under ``/api/``).
    Must come after ``AuthenticationMiddleware``.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.FER_MAX_ANONYMOUS_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit and not request.user.is_authenticated and "HTTP_AUTHORIZATION" not in request.META:
            message = f"log in first: bodies over {limit} bytes are accepted only from logged-in users"
            if request.path.startswith("/api/"):
                return JsonResponse({"error": {"code": "too_large", "message": message, "details": None}}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
