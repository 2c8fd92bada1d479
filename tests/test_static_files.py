"""Static files are served by the application itself (WhiteNoise), also with DEBUG off, so a
plain gunicorn deployment shows styled pages with live progress bars."""

import pytest


@pytest.mark.parametrize("path", ["/static/qualifier/style.css", "/static/qualifier/live.js"])
def test_static_files_are_served_with_debug_off(client, settings, path):
    settings.DEBUG = False

    response = client.get(path)

    assert response.status_code == 200
    assert b"".join(response.streaming_content)
