"""Django admin: sessions (with the same filters and search as the report overview) and the export audit log."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from sessions_app.models import EmotionSession, ExportRecord
from sessions_app.services.sessions import session_end


@admin.register(EmotionSession)
class EmotionSessionAdmin(admin.ModelAdmin):
    """Sessions of all users. Filters: kind, status, owner, date; search: name and owner's username.

    ``status`` is read-only: a session ends only through ``services.sessions.session_end`` (sets ``ended_at`` and
    tells live clients with ``session.ended``), here via the list action "End selected sessions".
    """

    list_display = (
        "id",
        "name",
        "owner",
        "kind",
        "status",
        "created_at",
        "ended_at",
        "frames_processed",
        "frames_dropped",
        "report_link",
    )
    list_filter = ("kind", "status", ("owner", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("name", "owner__username")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    actions = ("end_sessions",)
    readonly_fields = (
        "status",
        "created_at",
        "ended_at",
        "frames_received",
        "frames_processed",
        "frames_dropped",
        "frames_rejected",
        "report_link",
    )
    fields = ("name", "owner", "kind", "target_fps", *readonly_fields)

    @admin.action(description="End selected sessions", permissions=["change"])
    def end_sessions(self, request, queryset) -> None:
        """End every running session of ``queryset`` with ``services.sessions.session_end`` (idempotent; ended ones are
        skipped) and report how many were ended."""
        ended = 0
        for session in queryset.filter(status=EmotionSession.Status.RUNNING):
            session_end(session=session)
            ended += 1
        skipped = queryset.count() - ended
        text = f"Ended {ended} session(s)." + (f" {skipped} had already ended." if skipped else "")
        self.message_user(request, text, messages.SUCCESS)

    @admin.display(description="Report")
    def report_link(self, obj: EmotionSession) -> str:
        """Link to the session's report page (``"–"`` for an unsaved session)."""
        if obj.pk is None:
            return "–"
        return format_html('<a href="{}">report</a>', reverse("reports:session-report", args=[obj.pk]))


@admin.register(ExportRecord)
class ExportRecordAdmin(admin.ModelAdmin):
    """The export audit log: read-only (who exported which session in which format, when)."""

    list_display = ("created_at", "username", "session_label", "format")
    list_filter = ("format", "created_at")
    search_fields = ("username", "session_label")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
