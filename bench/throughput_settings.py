"""Bench-only settings: the project's own, with `bench.throughput_urls` adding the minimal view
that bench/api_throughput.py compares the notifier endpoint with. Never used by the project."""

from qualifier.settings import *  # noqa: F403 - the project's settings, unchanged but the URLs

ROOT_URLCONF = "bench.throughput_urls"
