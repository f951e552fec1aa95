"""Top-level URLs: admin, login/logout, the sessions web app and the REST API."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from fer_platform.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("sessions_app.api.urls")),
    path("reports/", include("sessions_app.reports.urls")),
    path("", include("sessions_app.web.urls")),
]
