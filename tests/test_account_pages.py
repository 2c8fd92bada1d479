"""Only the account pages we mean to serve: sign-in and sign-out, and password change and reset
only when mail is configured, with guesses and reset requests throttled (issue 15, item 4)."""

from __future__ import annotations

import importlib
import logging

import pytest
from django.core import mail
from django.test import override_settings
from django.urls import clear_url_caches

from qualifier.environment import Env, SettingError


def _load_urls() -> None:
    import qualifier.urls

    clear_url_caches()
    importlib.reload(qualifier.urls)


@pytest.fixture
def mail_on():
    """The URLs as a server with EMAIL_URL set builds them (they are read when it starts)."""
    mailers = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    with override_settings(MAILERS=mailers, AUTH_FAILURE_LIMIT=3):
        _load_urls()
        yield
    _load_urls()


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/MQ/set-password/",
        "/accounts/reset/done/",
        "/accounts/password_change/",
        "/accounts/password_change/done/",
    ],
)
def test_without_mail_only_sign_in_and_sign_out_are_served(client, alice, path):
    client.force_login(alice)
    assert client.get(path).status_code == 404
    assert client.post(path, {"email": "alice@corp.test"}).status_code == 404


def test_sign_in_and_sign_out_are_served_without_mail(client, alice):
    assert client.get("/accounts/login/").status_code == 200
    client.force_login(alice)
    assert client.post("/accounts/logout/").status_code == 302


@pytest.mark.usefixtures("mail_on")
def test_with_mail_password_resets_are_sent_then_throttled(client, alice, caplog):
    alice.set_password("the-right-one-42")  # Django mails only users with a usable password
    alice.save()
    caplog.set_level(logging.INFO, logger="common.throttle")
    for _ in range(3):
        response = client.post("/accounts/password_reset/", {"email": "alice@corp.test"})
        assert response.status_code == 302
    assert len(mail.outbox) == 3
    refused = client.post("/accounts/password_reset/", {"email": "alice@corp.test"})
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 300
    assert "Too many password reset requests" in refused.content.decode()
    assert len(mail.outbox) == 3
    assert "Password reset request from 127.0.0.1 (3 in this window)" in caplog.text
    # Unknown addresses count the same: the throttle does not tell them apart.
    other = client.post(
        "/accounts/password_reset/", {"email": "nobody@corp.test"}, REMOTE_ADDR="10.0.0.5"
    )
    assert other.status_code == 302


def _change(client, old: str, **extra):
    return client.post(
        "/accounts/password_change/",
        {
            "old_password": old,
            "new_password1": "A-new-passphrase-77",
            "new_password2": "A-new-passphrase-77",
        },
        **extra,
    )


@pytest.mark.usefixtures("mail_on")
def test_wrong_old_passwords_count_as_failed_sign_ins_then_are_refused(client, alice):
    alice.set_password("the-right-one-42")
    alice.save()
    client.force_login(alice)
    for _ in range(3):
        response = _change(client, "a-guess")
        assert response.status_code == 200
        assert "old_password" in response.context["form"].errors
    refused = _change(client, "the-right-one-42")
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.content.decode()
    alice.refresh_from_db()
    assert alice.check_password("the-right-one-42")
    # The same limit as sign-in: the guesser cannot sign in from that address either.
    client.logout()
    sign_in = client.post("/accounts/login/", {"username": "alice", "password": "the-right-one-42"})
    assert sign_in.status_code == 429


@pytest.mark.usefixtures("mail_on")
def test_a_right_old_password_changes_it(client, alice):
    alice.set_password("the-right-one-42")
    alice.save()
    client.force_login(alice)
    assert _change(client, "the-right-one-42").status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("A-new-passphrase-77")


@override_settings(AUTH_FAILURE_LIMIT=2)
def test_the_admins_password_change_counts_wrong_old_passwords_too(client, alice):
    alice.is_staff = True
    alice.set_password("the-right-one-42")
    alice.save()
    client.force_login(alice)
    form = {
        "old_password": "a-guess",
        "new_password1": "A-new-passphrase-77",
        "new_password2": "A-new-passphrase-77",
    }
    assert [client.post("/admin/password_change/", form).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


def test_mail_is_configured_from_email_url():
    env = Env()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMAIL_URL", "smtp+tls://app:hunter2@mail.example.com:587")
        assert env.mailers("EMAIL_URL") == {
            "default": {
                "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "OPTIONS": {
                    "host": "mail.example.com",
                    "port": 587,
                    "username": "app",
                    "password": "hunter2",
                    "use_tls": True,
                },
            }
        }
        patch.setenv("EMAIL_URL", "")
        assert env.mailers("EMAIL_URL") == {}
        patch.setenv("EMAIL_URL", "carrier-pigeon://app:hunter2@coop")
        with pytest.raises(SettingError, match="EMAIL_URL") as refused:
            env.mailers("EMAIL_URL")
        assert "hunter2" not in str(refused.value)
