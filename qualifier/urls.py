"""The project's URLs: the user's pages, sign-in, the admin, the JSON APIs, and the health and
metrics endpoints."""

from django.contrib import admin
from django.urls import include, path, re_path

from recovery import health

from . import accounts, tokens, views
from .api_urls import api_docs, qualify_api

pages = [
    path("", views.run_list, name="runs"),
    path("runs/new/", views.run_new, name="run-new"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/results.csv", views.run_results_csv, name="run-results-csv"),
    path("runs/<int:pk>/continue/", views.run_continue, name="run-continue"),
    path("account/tokens/", tokens.token_list, name="tokens"),
    path("account/tokens/<int:pk>/revoke/", tokens.token_revoke, name="token-revoke"),
    path("docs/api/", api_docs, name="api-docs"),
]

urlpatterns = [
    path("", include((pages, "qualifier"))),
    path("accounts/", include(accounts.account_urls(mail=accounts.mail_configured()))),
    accounts.admin_password_change(),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/qualify/", qualify_api.urls),
    # [\s\S], not ".": a path with an encoded newline (%0A) is an unknown API URL too.
    re_path(r"^api/(?P<path>[\s\S]*)$", views.api_not_found, name="api-not-found"),
]

handler400 = "qualifier.errors.bad_request"
handler403 = "qualifier.errors.permission_denied"
handler500 = "qualifier.views.server_error"
