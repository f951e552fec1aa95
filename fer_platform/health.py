"""``/healthz``: liveness and readiness of the web process for container health checks and load balancers."""

from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """``{"status": "ok"}`` (200) when the database answers, else ``{"status": "unavailable"}`` (503).

    Served over plain HTTP inside the deployment (exempt from the HTTPS redirect); needs no login and shows
    nothing about sessions.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - any database failure means "not ready"
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
