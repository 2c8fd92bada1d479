"""Bench-only URLs: the project's, plus a minimal view (the floor a Django request costs on the
same server, middleware included). Never part of the project's URLs."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from qualifier.urls import handler400, handler403, handler500
from qualifier.urls import urlpatterns as project_urls

__all__ = ["handler400", "handler403", "handler500", "urlpatterns"]


def minimal(request: HttpRequest) -> JsonResponse:
    """A small JSON answer that reads nothing: no session, no user, no query."""
    return JsonResponse({"count": 0, "results": []})


urlpatterns = [path("bench/minimal", minimal), *project_urls]
