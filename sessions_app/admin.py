"""Django admin: sessions (with the same filters and search as the report overview) and the export audit log."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from sessions_app.models import EmotionSession, ExportRecord


@admin.register(EmotionSession)
class EmotionSessionAdmin(admin.ModelAdmin):
    """Sessions of all users. Filters: kind, status, owner, date; search: name and owner's username."""

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
    readonly_fields = (
        "created_at",
        "ended_at",
        "frames_received",
        "frames_processed",
        "frames_dropped",
        "frames_rejected",
        "report_link",
    )
    fields = ("name", "owner", "kind", "target_fps", "status", *readonly_fields)

    @admin.display(description="Report")
    def report_link(self, obj: EmotionSession) -> str:
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
