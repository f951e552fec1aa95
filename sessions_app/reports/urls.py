"""Report page URLs under /reports/ (issue #4)."""

from django.urls import path

from sessions_app.reports import views as report_views

app_name = "reports"
urlpatterns: list = [
    path("", report_views.report_overview, name="overview"),
    path("sessions/<int:session_id>/", report_views.session_report, name="session-report"),
    path("sessions/<int:session_id>/pdf/", report_views.session_report_pdf, name="session-report-pdf"),
]
