"""The qualification API, mounted by the project under /api/qualify/."""

from common.jsonapi import api_path

from . import api, apidocs

app_name = "qualifier-api"

urlpatterns = [
    *api_path("openapi.json", apidocs.openapi_json, name="openapi"),
    *api_path("runs", api.runs, name="runs"),
    *api_path("runs/active", api.active_runs, name="active-runs"),
    *api_path("runs/<int:pk>", api.run, name="run"),
    *api_path("runs/<int:pk>/results", api.run_results, name="run-results"),
    *api_path("runs/<int:pk>/results.csv", api.run_results_csv, name="run-results-csv"),
    *api_path("runs/<int:pk>/continue", api.run_continue, name="run-continue"),
    # The old name, with the new behaviour: the same run continues (no new run is created).
]
