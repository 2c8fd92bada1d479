"""Personal API tokens: issuing and storing them, the API tokens page, bearer authentication on
the user API and the recovery API, the admin and the create_api_token command."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.models import API_TOKENS_PER_USER, ApiToken, TokenRefused
from common.tokens import issue_token
from qualifier.models import Outcome, Prospect, ProspectResult
from recovery.models import QualificationRun, RecoveryEvent, RecoverySource, RunStatus
from tests.helpers import CSRF_SECRET, DUMMY

pytestmark = pytest.mark.django_db

API = "/api/qualify"
RECOVERY = f"{API}/recovery"
OPERATOR_TOKEN = "operator-token-for-the-test-suite-0123456789"
CHALLENGE = 'Bearer realm="qualifier"'
INVALID = 'Bearer realm="qualifier", error="invalid_token"'


def bearer(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def alice_token(alice) -> str:
    return issue_token(alice, "script")[1]


@pytest.fixture
def tokens_page(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def form_post(client: Client, url: str, data: dict | None = None):
    return client.post(url, {"csrfmiddlewaretoken": CSRF_SECRET, **(data or {})})


# --- issuing and storing -------------------------------------------------------------------------


def test_a_token_is_stored_as_its_sha256_digest_and_never_in_plaintext(alice):
    token, plaintext = issue_token(alice, "nightly import")
    assert plaintext.startswith("qlf_") and len(plaintext) == 47
    row = ApiToken.objects.values().get(pk=token.pk)
    assert row["digest"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert row["prefix"] == plaintext[:12]
    assert not any(plaintext in str(value) for value in row.values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM common_apitoken")
        assert not any(plaintext in str(value) for value in cursor.fetchone())


def test_every_token_is_different(alice):
    secrets = {issue_token(alice, f"token {n}")[1] for n in range(10)}
    assert len(secrets) == 10


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Give the token a name"),
        ("   ", "Give the token a name"),
        ("x" * 101, "at most 100"),
        ("tab\there", "control characters"),
        ("nul\x00", "NUL"),
        (None, "Give the token a name"),
    ],
)
def test_a_bad_name_is_refused_and_creates_nothing(alice, name, message):
    with pytest.raises(TokenRefused, match=message) as refused:
        issue_token(alice, name)
    assert refused.value.field == "name"
    assert not ApiToken.objects.exists()


def test_a_name_is_unique_among_a_users_active_tokens(alice, bob):
    first, _ = issue_token(alice, "laptop")
    with pytest.raises(TokenRefused, match="already have a token named 'laptop'"):
        issue_token(alice, " laptop ")
    issue_token(bob, "laptop")  # another user's names are theirs
    first.revoke()
    issue_token(alice, "laptop")  # a revoked token's name is free again
    assert ApiToken.objects.filter(user=alice, name="laptop").count() == 2


def test_a_user_may_hold_a_bounded_number_of_active_tokens(alice):
    for n in range(API_TOKENS_PER_USER):
        issue_token(alice, f"token {n}")
    with pytest.raises(TokenRefused, match="revoke one") as refused:
        issue_token(alice, "one too many")
    assert refused.value.field is None
    ApiToken.objects.filter(user=alice).first().revoke()
    issue_token(alice, "one too many")


def test_authenticate_finds_the_active_token_of_an_active_user(alice, alice_token):
    found = ApiToken.objects.authenticate(alice_token)
    assert found is not None and found.user == alice
    near_miss = alice_token[:-1] + ("A" if alice_token[-1] != "A" else "B")
    assert ApiToken.objects.authenticate(near_miss) is None
    alice.is_active = False
    alice.save()
    assert ApiToken.objects.authenticate(alice_token) is None
    alice.is_active = True
    alice.save()
    found.revoke()
    assert ApiToken.objects.authenticate(alice_token) is None


@pytest.mark.parametrize("text", ["", "qlf_short", "x" * 47, "qlf_" + "é" * 43, OPERATOR_TOKEN])
def test_text_that_cannot_be_a_token_is_refused_without_a_query(text, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert ApiToken.objects.authenticate(text) is None


def test_last_use_is_written_at_most_once_a_minute(alice_token):
    with CaptureQueriesContext(connection) as first:
        token = ApiToken.objects.authenticate(alice_token)
    assert token.last_used_at is not None
    assert len(first) == 2  # the lookup, and the first use
    with CaptureQueriesContext(connection) as again:
        ApiToken.objects.authenticate(alice_token)
    assert len(again) == 1  # the lookup only: a polling client does not write every time
    earlier = timezone.now() - dt.timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=earlier)
    ApiToken.objects.authenticate(alice_token)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > earlier


# --- the API tokens page -------------------------------------------------------------------------


def test_the_page_needs_a_signed_in_user():
    response = Client().get("/account/tokens/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_page_is_linked_in_the_navigation(tokens_page):
    assert b'href="/account/tokens/"' in tokens_page.get("/").content


def test_creating_a_token_shows_it_once(tokens_page, alice):
    response = form_post(tokens_page, "/account/tokens/", {"name": "nightly import"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice)
    plaintext = response.context["plaintext"]
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    page = response.content.decode()
    assert plaintext in page
    assert "will not be shown again" in page
    assert "no-store" in response["Cache-Control"]
    again = tokens_page.get("/account/tokens/").content.decode()
    assert plaintext not in again
    assert "nightly import" in again and token.prefix in again


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "Give the token a name"), ("x" * 101, "at most 100"), ("taken", "already have")],
)
def test_a_bad_name_is_shown_on_the_form_and_creates_nothing(tokens_page, alice, name, message):
    issue_token(alice, "taken")
    response = form_post(tokens_page, "/account/tokens/", {"name": name})
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["name"])
    assert response.context["plaintext"] is None
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_the_limit_is_shown_on_the_form(tokens_page, alice):
    for n in range(API_TOKENS_PER_USER):
        issue_token(alice, f"token {n}")
    response = form_post(tokens_page, "/account/tokens/", {"name": "more"})
    assert "revoke one" in " ".join(response.context["form"].non_field_errors())
    assert ApiToken.objects.filter(user=alice).count() == API_TOKENS_PER_USER


def test_the_list_shows_only_the_users_active_tokens(tokens_page, alice, bob):
    issue_token(alice, "mine")
    issue_token(alice, "old")[0].revoke()
    issue_token(bob, "theirs")
    names = [token.name for token in tokens_page.get("/account/tokens/").context["tokens"]]
    assert names == ["mine"]


def test_revoking_asks_first_then_revokes_on_post(tokens_page, alice, alice_token):
    token = ApiToken.objects.get(user=alice)
    url = f"/account/tokens/{token.pk}/revoke/"
    confirm = tokens_page.get(url)
    assert confirm.status_code == 200 and b"Revoke token" in confirm.content
    assert ApiToken.objects.active().count() == 1
    assert tokens_page.post(url).status_code == 403  # no CSRF token
    response = form_post(tokens_page, url)
    assert response.status_code == 302 and response["Location"] == "/account/tokens/"
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client().get(f"{API}/runs", headers=bearer(alice_token)).status_code == 401
    assert form_post(tokens_page, url).status_code == 404  # revoked: gone from the page


def test_another_users_token_cannot_be_seen_or_revoked(tokens_page, bob):
    theirs, _ = issue_token(bob, "theirs")
    url = f"/account/tokens/{theirs.pk}/revoke/"
    assert tokens_page.get(url).status_code == 404
    assert form_post(tokens_page, url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


# --- bearer tokens on the user API ---------------------------------------------------------------


@pytest.fixture
def failed_run(alice, make_run) -> QualificationRun:
    """A failed run of Alice's with one result and two prospects left."""
    run = make_run(RunStatus.FAILED, total=3, completed=1, user=alice, criteria={})
    prospects = Prospect.objects.bulk_create(
        Prospect(run=run, position=position, number=position, name="P", company="Co")
        for position in (1, 2, 3)
    )
    ProspectResult.objects.create(
        run=run, prospect=prospects[0], outcome=Outcome.QUALIFIED, score=90, reasons=["r"]
    )
    return run


@override_settings(TASKS=DUMMY)
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/runs", 200),
        ("post", "/runs", 201),
        ("get", "/runs/active", 200),
        ("get", "/runs/{id}", 200),
        ("get", "/runs/{id}/results", 200),
        ("get", "/runs/{id}/results.csv", 200),
        ("post", "/runs/{id}/continue", 200),
        ("post", "/runs/{id}/continue", 200),
    ],
)
def test_a_personal_token_works_on_every_user_api_endpoint_without_csrf(
    alice, alice_token, failed_run, method, path, status
):
    client = Client(enforce_csrf_checks=True)  # no session, no CSRF cookie
    url = API + path.format(id=failed_run.pk)
    if method == "post" and path == "/runs":
        body = json.dumps({"prospects": [{"name": "Ann", "company": "Acme"}]})
        response = client.post(
            url, body, content_type="application/json", headers=bearer(alice_token)
        )
    else:
        response = getattr(client, method)(url, headers=bearer(alice_token))
    assert response.status_code == status, response.content
    if method == "post" and path == "/runs":
        assert QualificationRun.objects.get(pk=response.json()["id"]).user == alice


def test_the_api_csv_is_the_pages_csv(alice, alice_token, failed_run, tokens_page):
    api = Client().get(f"{API}/runs/{failed_run.pk}/results.csv", headers=bearer(alice_token))
    page = tokens_page.get(f"/runs/{failed_run.pk}/results.csv")
    assert api["Content-Type"] == page["Content-Type"] == "text/csv; charset=utf-8"
    assert api["Content-Disposition"] == page["Content-Disposition"]
    assert b"".join(api.streaming_content) == b"".join(page.streaming_content)
    assert (
        Client()
        .get(f"{API}/runs/{failed_run.pk}", headers=bearer(alice_token))
        .json()["results_csv_url"]
        == f"{API}/runs/{failed_run.pk}/results.csv"
    )


def test_a_token_sees_only_its_users_runs(bob, alice_token, make_run):
    theirs = make_run(RunStatus.COMPLETED, user=bob)
    for suffix in ("", "/results", "/results.csv"):
        response = Client().get(f"{API}/runs/{theirs.pk}{suffix}", headers=bearer(alice_token))
        assert response.status_code == 404
    assert Client().get(f"{API}/runs", headers=bearer(alice_token)).json()["count"] == 0


def test_the_token_decides_who_calls_even_with_another_users_session(bob, alice, alice_token):
    client = Client()
    client.force_login(bob)
    body = json.dumps({"prospects": [{"name": "Ann", "company": "Acme"}]})
    with override_settings(TASKS=DUMMY):
        response = client.post(
            f"{API}/runs", body, content_type="application/json", headers=bearer(alice_token)
        )
    assert QualificationRun.objects.get(pk=response.json()["id"]).user == alice


def test_the_session_still_works_and_still_needs_csrf(tokens_page):
    assert tokens_page.get(f"{API}/runs").status_code == 200
    response = tokens_page.post(f"{API}/runs", "{}", content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]


def test_a_request_with_a_token_is_marked_used(alice_token):
    Client().get(f"{API}/runs", headers=bearer(alice_token))
    assert ApiToken.objects.get().last_used_at is not None


def _revoked(alice, alice_token):
    ApiToken.objects.get().revoke()
    return alice_token


def _inactive(alice, alice_token):
    alice.is_active = False
    alice.save()
    return alice_token


@pytest.mark.parametrize(
    "make_token",
    [
        _revoked,
        _inactive,
        lambda alice, alice_token: "qlf_" + "A" * 43,  # unknown
        lambda alice, alice_token: "not-a-token",
    ],
    ids=["revoked", "inactive-user", "unknown", "malformed-token"],
)
@pytest.mark.parametrize("url", [f"{API}/runs", RECOVERY])
def test_a_bad_token_is_401_invalid_token_with_the_challenge(alice, alice_token, make_token, url):
    response = Client().get(url, headers=bearer(make_token(alice, alice_token)))
    body = response.json()
    assert (response.status_code, body["error"], body["code"]) == (
        401,
        "Invalid API token.",
        "invalid_token",
    )
    assert response["WWW-Authenticate"] == INVALID


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer    ", "qlf_x"])
@pytest.mark.parametrize("url", [f"{API}/runs", RECOVERY])
def test_a_malformed_authorization_header_is_a_clear_401(header, url):
    response = Client().get(url, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"] == "Unsupported Authorization header: use 'Bearer <token>'."
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == CHALLENGE


@pytest.mark.parametrize(
    "path", ["/runs", "/runs/active", "/runs/1", "/runs/1/results", "/runs/1/results.csv"]
)
def test_every_401_carries_the_bearer_challenge(path):
    for url in (API + path, RECOVERY):
        response = Client().get(url)
        assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
        assert response["WWW-Authenticate"] == CHALLENGE


@override_settings(AUTH_FAILURE_LIMIT=3)
def test_failed_personal_tokens_are_throttled_even_the_right_one_then(alice_token):
    client = Client()
    for _ in range(3):
        assert client.get(f"{API}/runs", headers=bearer("qlf_" + "B" * 43)).status_code == 401
    response = client.get(f"{API}/runs", headers=bearer(alice_token))
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many failed API tokens" in response.json()["error"]
    assert response.json()["code"] == "throttled"


@override_settings(RECOVERY_API_TOKEN=OPERATOR_TOKEN)
def test_the_operator_token_is_refused_on_the_user_api_with_a_reason():
    response = Client().get(f"{API}/runs", headers=bearer(OPERATOR_TOKEN))
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    assert "recovery API only" in response.json()["error"]


# --- bearer tokens on the recovery API -----------------------------------------------------------


def staff_with(username: str, *codenames: str, is_staff: bool = True):
    user = get_user_model().objects.create_user(username, is_staff=is_staff)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def stuck_run(make_run) -> QualificationRun:
    return make_run(created_minutes_ago=30, started_minutes_ago=30, heartbeat_minutes_ago=20)


def test_a_staff_users_token_recovers_with_that_user_as_actor(stuck_run):
    ops = staff_with("ops", "change_qualificationrun")
    _, plaintext = issue_token(ops, "cron")
    response = Client(enforce_csrf_checks=True).post(RECOVERY, headers=bearer(plaintext))
    assert response.status_code == 200, response.content
    assert [run["id"] for run in response.json()["recovered"]] == [stuck_run.pk]
    event = RecoveryEvent.objects.get()
    assert (event.source, event.actor) == (RecoverySource.API, ops)


@override_settings(RECOVERY_API_TOKEN=OPERATOR_TOKEN)
def test_the_operator_token_still_recovers_without_an_actor(stuck_run):
    response = Client(enforce_csrf_checks=True).post(RECOVERY, headers=bearer(OPERATOR_TOKEN))
    assert response.status_code == 200
    assert RecoveryEvent.objects.get().actor is None


@pytest.mark.parametrize(
    ("codenames", "is_staff", "get_status", "post_status"),
    [
        (("view_qualificationrun",), True, 200, 403),
        (("change_qualificationrun",), True, 200, 200),
        ((), True, 403, 403),
        (("change_qualificationrun",), False, 403, 403),
    ],
    ids=["staff-viewer", "staff-changer", "staff-without-permission", "not-staff"],
)
def test_a_personal_token_has_its_users_permissions_on_the_recovery_api(
    stuck_run, codenames, is_staff, get_status, post_status
):
    user = staff_with("someone", *codenames, is_staff=is_staff)
    _, plaintext = issue_token(user, "script")
    client = Client(enforce_csrf_checks=True)
    assert client.get(RECOVERY, headers=bearer(plaintext)).status_code == get_status
    response = client.post(RECOVERY, headers=bearer(plaintext))
    assert response.status_code == post_status
    if post_status == 403:
        assert response.json()["code"] == "permission_denied"
        stuck_run.refresh_from_db()
        assert stuck_run.status == RunStatus.PROCESSING


# --- admin ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(db) -> Client:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    return client


def test_the_admin_lists_tokens_without_their_digest(admin_client, alice):
    token, _ = issue_token(alice, "laptop")
    page = admin_client.get("/admin/common/apitoken/").content.decode()
    assert "laptop" in page and token.prefix in page
    assert token.digest not in page
    detail = admin_client.get(f"/admin/common/apitoken/{token.pk}/change/").content.decode()
    assert token.digest not in detail and "laptop" in detail
    assert admin_client.get("/admin/common/apitoken/add/").status_code == 403


def test_the_admin_revokes_selected_tokens(admin_client, alice, alice_token):
    revoked, _ = issue_token(alice, "already")
    revoked.revoke()
    response = admin_client.post(
        "/admin/common/apitoken/",
        {"action": "revoke_selected", "_selected_action": [t.pk for t in ApiToken.objects.all()]},
        follow=True,
    )
    assert "Revoked 1 token" in response.content.decode()
    assert "1 already revoked" in response.content.decode()
    assert not ApiToken.objects.active().exists()


def test_a_staff_user_who_may_only_view_tokens_gets_no_revoke_action(alice, alice_token):
    viewer = staff_with("viewer", "view_apitoken")
    client = Client()
    client.force_login(viewer)
    response = client.get("/admin/common/apitoken/")
    assert response.status_code == 200
    assert b"revoke_selected" not in response.content


# --- the command -----------------------------------------------------------------------------------


def test_create_api_token_prints_a_working_token_once(alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "alice", "--name", "ci", stdout=out, stderr=err)
    plaintext = out.getvalue().strip()
    assert plaintext.startswith("qlf_")
    assert "shown only this once" in err.getvalue()
    assert plaintext not in err.getvalue()
    assert Client().get(f"{API}/runs", headers=bearer(plaintext)).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody", "--name", "ci"], "There is no user named 'nobody'"),
        (["alice", "--name", ""], "Give the token a name"),
        (["alice", "--name", "x" * 101], "at most 100"),
        (["alice", "--name", "taken"], "already have a token named 'taken'"),
    ],
)
def test_create_api_token_refuses_bad_input_and_creates_nothing(alice, args, message):
    issue_token(alice, "taken")
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiToken.objects.count() == 1


def test_create_api_token_refuses_an_inactive_user(alice):
    alice.is_active = False
    alice.save()
    with pytest.raises(CommandError, match="inactive"):
        call_command("create_api_token", "alice", "--name", "ci", stdout=io.StringIO())
    assert not ApiToken.objects.exists()


def test_create_api_token_with_replace_revokes_the_token_of_that_name_and_issues_a_new_one(alice):
    """A script that creates its token on every run (the docs' API session) can run again."""
    first, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "alice", "--name", "ci", "--replace", stdout=first, stderr=err)
    assert "Revoked" not in err.getvalue()
    second, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_token", "alice", "--name", "ci", "--replace", stdout=second, stderr=err
    )
    assert "Revoked the earlier API token 'ci' of alice." in err.getvalue()
    old, new = first.getvalue().strip(), second.getvalue().strip()
    assert Client().get(f"{API}/runs", headers=bearer(old)).status_code == 401
    assert Client().get(f"{API}/runs", headers=bearer(new)).status_code == 200
    assert ApiToken.objects.filter(name="ci").active().count() == 1


# --- concurrency -----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_issues_cannot_pass_the_limit_or_duplicate_a_name(alice):
    """The owner's row is locked while a token is issued, so racing requests take turns: of
    eight racing for the last free place, one gets it; of two racing for one name, one wins."""
    import threading

    from django.db import connections

    for n in range(API_TOKENS_PER_USER - 1):
        issue_token(alice, f"token {n}")

    def race(names: list[str]) -> list[str]:
        barrier = threading.Barrier(len(names))
        outcomes: list[str] = []

        def issue(name: str) -> None:
            barrier.wait()
            try:
                issue_token(alice, name)
                outcomes.append("issued")
            except TokenRefused as exc:
                outcomes.append(str(exc))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=issue, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return outcomes

    outcomes = race([f"racer {n}" for n in range(8)])
    assert outcomes.count("issued") == 1 and len(outcomes) == 8
    assert ApiToken.objects.active().filter(user=alice).count() == API_TOKENS_PER_USER
    ApiToken.objects.filter(name="token 0").revoke()
    outcomes = race(["same", "same"])
    assert sorted(outcomes)[0].startswith("You already have a token named 'same'")
    assert outcomes.count("issued") == 1
