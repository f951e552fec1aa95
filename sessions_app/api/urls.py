"""REST API URLs, mounted at /api/: versioned endpoints under v1/, the OpenAPI schema and Swagger UI."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sessions_app.api import views

app_name = "api"

urlpatterns = [
    path("v1/auth/token/", views.TokenView.as_view(), name="token"),
    path("v1/sessions/", views.SessionListCreateView.as_view(), name="session-list"),
    path("v1/sessions/<str:session_id>/", views.SessionDetailView.as_view(), name="session-detail"),
    path("v1/sessions/<str:session_id>/end/", views.SessionEndView.as_view(), name="session-end"),
    path("v1/sessions/<str:session_id>/timeline/", views.SessionTimelineView.as_view(), name="session-timeline"),
    path("v1/sessions/<str:session_id>/faces/", views.SessionFacesView.as_view(), name="session-faces"),
    path("v1/sessions/<str:session_id>/export/", views.SessionExportView.as_view(), name="session-export"),
    path("v1/sessions/<str:session_id>/report/", views.SessionReportView.as_view(), name="session-report"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    # Anything else under the API answers with the API's JSON error body, not Django's HTML 404 page.
    re_path(r"^.*$", views.api_not_found, name="not-found"),
]
