"""The export audit log: who exported which session, when, in which format."""

from __future__ import annotations

from sessions_app.models import EmotionSession, ExportRecord


def export_record_create(*, user, session: EmotionSession, fmt: str) -> ExportRecord:
    """Write the audit-log entry for an export of ``session`` by ``user`` in ``fmt`` (csv, json or pdf).

    The username and the session's name and id are copied into the entry, so it survives deleting either.
    """
    authenticated = getattr(user, "is_authenticated", False)
    return ExportRecord.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else "",
        session=session,
        session_label=f"{session.name} (#{session.pk})"[:250],
        format=fmt,
    )
