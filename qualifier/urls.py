"""The project's URLs: the user's pages, sign-in, the admin, and the JSON APIs."""

from django.contrib import admin
from django.urls import include, path, re_path

from recovery import urls as recovery_urls

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/qualify/", include(recovery_urls)),
    re_path(r"^api/(?P<path>.*)$", views.api_not_found, name="api-not-found"),
]

handler500 = "qualifier.views.server_error"
