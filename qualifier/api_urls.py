"""The qualification API, mounted by the project under /api/qualify/."""

from django.urls import path

from . import api

app_name = "qualifier-api"

urlpatterns = [
    path("runs", api.runs, name="runs"),
    path("runs/active", api.active_runs, name="active-runs"),
    path("runs/<int:pk>", api.run, name="run"),
    path("runs/<int:pk>/results", api.run_results, name="run-results"),
    path("runs/<int:pk>/continue", api.run_continue, name="run-continue"),
    # The old name, with the new behaviour: the same run continues (no new run is created).
    path("runs/<int:pk>/retry", api.run_continue, name="run-retry"),
]
