"""Static files are served by the application itself (WhiteNoise), also with DEBUG off, so a
plain gunicorn deployment shows styled pages with live progress bars."""

import pytest


@pytest.mark.parametrize("path", ["/static/qualifier/style.css", "/static/qualifier/live.js"])
def test_static_files_are_served_with_debug_off(client, settings, path):
    settings.DEBUG = False

    response = client.get(path)

    assert response.status_code == 200
    assert b"".join(response.streaming_content)


def test_favicon_ico_is_served_at_the_root_as_an_icon(client, settings):
    """Browsers ask every site for /favicon.ico; the admin's pages do not name an icon."""
    settings.DEBUG = False

    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] in {"image/x-icon", "image/vnd.microsoft.icon"}
    assert b"".join(response.streaming_content).startswith(b"\x00\x00\x01\x00")


def test_pages_name_their_icon(client, alice):
    client.force_login(alice)

    html = client.get("/").content.decode()

    assert '<link rel="icon" href="/static/qualifier/favicon.svg"' in html
    assert client.get("/static/qualifier/favicon.svg").status_code == 200
