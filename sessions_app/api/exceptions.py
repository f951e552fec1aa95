"""Consistent JSON error bodies for the REST API.

Every error response has the shape ``{"error": {"code": str, "message": str, "details": object | null}}``:

- ``code``: stable machine-readable reason (``invalid``, ``not_authenticated``, ``authentication_failed``,
  ``permission_denied``, ``not_found``, ``method_not_allowed``, ``throttled``, ``conflict``, ``parse_error``, ...);
- ``message``: one human-readable sentence;
- ``details``: per-field messages for ``invalid`` (``{"field": ["message", ...]}``), ``{"retry_after_s": n}`` for
  ``throttled``, otherwise ``null``.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(exceptions.APIException):
    """409: the request conflicts with the resource's state (e.g. ending a session that already ended)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


def _first_code(codes) -> str:
    if isinstance(codes, str):
        return codes
    if isinstance(codes, list) and codes:
        return _first_code(codes[0])
    if isinstance(codes, dict) and codes:
        return _first_code(next(iter(codes.values())))
    return "error"


def error_body(*, code: str, message: str, details=None) -> dict:
    """The JSON error body of the API."""
    return {"error": {"code": code, "message": message, "details": details}}


def api_exception_handler(exc, context):
    """DRF ``EXCEPTION_HANDLER``: DRF's handling (status, headers such as ``Retry-After``/``WWW-Authenticate``)
    with the body rewritten into ``{"error": {"code", "message", "details"}}``. Returns ``None`` (a 500) only for
    exceptions DRF does not handle either."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(code="invalid", message="Invalid input.", details=details)
    elif isinstance(exc, exceptions.Throttled):
        response.data = error_body(
            code="throttled",
            message="Too many requests; try again later.",
            details={"retry_after_s": None if exc.wait is None else int(exc.wait + 0.999)},
        )
    elif isinstance(exc, exceptions.APIException):
        response.data = error_body(code=_first_code(exc.get_codes()), message=str(exc.detail), details=None)
    return response
