"""Web pages of the sessions app: list/create, live page, dashboard, upload, end, settings (rename, alert), delete,
compare, the public participant notice (``/n/<code>/``); plus the timeline JSON."""

from django.urls import path

from sessions_app.web import views

app_name = "sessions_app"
urlpatterns: list = [
    path("", views.session_list, name="session-list"),
    path("sessions/new/", views.session_create, name="session-create"),
    path("sessions/<int:session_id>/", views.session_dashboard, name="session-dashboard"),
    path("sessions/<int:session_id>/live/", views.session_live, name="session-live"),
    path("sessions/<int:session_id>/upload/", views.session_upload, name="session-upload"),
    path("sessions/<int:session_id>/end/", views.session_end, name="session-end"),
    path("sessions/<int:session_id>/settings/", views.session_settings, name="session-settings"),
    path("sessions/<int:session_id>/delete/", views.session_delete, name="session-delete"),
    path("sessions/compare/", views.session_compare, name="session-compare"),
    path("n/<str:code>/", views.notice, name="notice"),
    path("sessions/<int:session_id>/timeline.json", views.session_timeline_json, name="session-timeline-json"),
]
