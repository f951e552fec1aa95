"""Access rules of the REST API.

Authentication is required everywhere except the token endpoint. Row-level access is *scoping*, not a permission
check: every session lookup goes through ``selectors.session_get_for_user`` (teachers: own sessions; staff: all),
so another teacher's session answers exactly like a missing one (404 ``not_found``).
"""

from __future__ import annotations

from rest_framework.exceptions import NotFound

from sessions_app import selectors
from sessions_app.models import EmotionSession


def visible_session_or_404(*, user, session_id) -> EmotionSession:
    """The session ``session_id`` if ``user`` may see it; raises ``NotFound`` (404) when it does not exist *or*
    belongs to another teacher."""
    try:
        return selectors.session_get_for_user(user=user, session_id=session_id)
    except EmotionSession.DoesNotExist:
        raise NotFound("Session not found.") from None
