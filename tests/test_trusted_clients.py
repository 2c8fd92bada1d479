"""The client's address comes from a forwarded header only when a trusted proxy sent it, and
the authentication throttle's counts are shared by every process (issue 15, item 3)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from django.core.checks import run_checks
from django.test import RequestFactory, override_settings

from common.throttle import client_address
from tests import processes

RECOVERY = "/api/qualify/recovery"
BEHIND_PROXIES = {
    "AUTH_CLIENT_IP_HEADER": "X-Forwarded-For",
    "AUTH_TRUSTED_PROXIES": (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")),
}


def address(remote: str, forwarded: str | None) -> str:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    return client_address(RequestFactory().get("/", REMOTE_ADDR=remote, headers=headers))


@override_settings(**BEHIND_PROXIES)
@pytest.mark.parametrize(
    ("remote", "forwarded", "client"),
    [
        # Straight from the internet: the header is the client's own word, ignored.
        ("8.8.8.8", "10.0.0.7", "8.8.8.8"),
        ("8.8.8.8", "1.1.1.1, 2.2.2.2", "8.8.8.8"),
        # From our proxy: the right-most address that is not a trusted proxy.
        ("127.0.0.1", "1.1.1.1", "1.1.1.1"),
        ("127.0.0.1", "6.6.6.6, 1.1.1.1", "1.1.1.1"),
        ("127.0.0.1", "6.6.6.6, 1.1.1.1, 10.0.0.2", "1.1.1.1"),
        ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
        # What is not an address ends the walk at the last trusted hop.
        ("127.0.0.1", "evil", "127.0.0.1"),
        ("127.0.0.1", "1.1.1.1:8080", "127.0.0.1"),
        ("127.0.0.1", "evil, 10.0.0.2", "10.0.0.2"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
        # A client inside the proxies' own networks.
        ("127.0.0.1", "10.0.0.9", "10.0.0.9"),
    ],
)
def test_the_client_is_the_right_most_forwarded_address_that_is_not_a_trusted_proxy(
    remote, forwarded, client
):
    assert address(remote, forwarded) == client


@override_settings(AUTH_CLIENT_IP_HEADER="X-Forwarded-For", AUTH_TRUSTED_PROXIES=())
def test_without_trusted_proxies_the_header_is_never_read():
    assert address("127.0.0.1", "1.1.1.1") == "127.0.0.1"


@override_settings(AUTH_FAILURE_LIMIT=2, **BEHIND_PROXIES)
def test_rotating_a_spoofed_header_does_not_escape_the_throttle(client, db):
    def attempt(spoofed: str) -> int:
        headers = {"Authorization": "Bearer wrong", "X-Forwarded-For": spoofed}
        return client.get(RECOVERY, headers=headers, REMOTE_ADDR="8.8.8.8").status_code

    assert [attempt(f"1.1.1.{n}") for n in range(3)] == [401, 401, 429]


@override_settings(AUTH_FAILURE_LIMIT=2, **BEHIND_PROXIES)
def test_a_spoofed_header_cannot_lock_another_client_out(client, db):
    for _ in range(3):
        client.get(
            RECOVERY,
            headers={"Authorization": "Bearer wrong", "X-Forwarded-For": "9.9.9.9"},
            REMOTE_ADDR="8.8.8.8",
        )
    victim = client.get(
        RECOVERY,
        headers={"Authorization": "Bearer wrong", "X-Forwarded-For": "9.9.9.9"},
        REMOTE_ADDR="127.0.0.1",
    )
    assert victim.status_code == 401


@override_settings(METRICS_ALLOWED_NETWORKS=(ip_network("10.0.0.0/8"),), **BEHIND_PROXIES)
def test_metrics_networks_use_the_same_trusted_client_address(client, db):
    spoofed = client.get("/metrics", REMOTE_ADDR="8.8.8.8", headers={"X-Forwarded-For": "10.1.1.1"})
    assert spoofed.status_code == 403
    outside = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", headers={"X-Forwarded-For": "8.8.8.8"}
    )
    assert outside.status_code == 403
    inside = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", headers={"X-Forwarded-For": "10.1.1.1"}
    )
    assert inside.status_code == 200


@pytest.mark.parametrize(
    ("settings", "check_id"),
    [
        ({"AUTH_TRUSTED_PROXIES": "10.0.0.0/8, proxy.local"}, "recovery.E019"),
        ({"AUTH_CLIENT_IP_HEADER": "X-Forwarded-For", "AUTH_TRUSTED_PROXIES": ()}, "recovery.E020"),
    ],
)
def test_trusted_proxies_are_checked(settings, check_id):
    with override_settings(**settings):
        errors = [message for message in run_checks(databases=[]) if message.id == check_id]
    assert len(errors) == 1
    assert errors[0].hint


COUNT_AND_ASK = """
from django.contrib.auth import authenticate
from django.test import RequestFactory
from common.throttle import SIGN_IN
request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="203.0.113.7")
for _ in range({failures}):
    assert authenticate(request, username="nobody", password="wrong") is None
print("RETRY_AFTER", SIGN_IN.retry_after(request))
"""


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_the_failure_count_with_the_default_cache(process_database):
    """Each process fails twice, under a limit of three: only a shared count refuses the
    second one's client. The processes run one after the other: the count, not a race, is
    what is checked."""

    def run_process(failures: int) -> str:
        result = processes.manage(
            ["shell", "-c", COUNT_AND_ASK.format(failures=failures)],
            process_database,
            AUTH_FAILURE_LIMIT="3",
            RECOVERY_ON_STARTUP="false",
        )
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if line.startswith("RETRY_AFTER"))

    assert run_process(2) == "RETRY_AFTER None"
    second = run_process(2)
    assert second != "RETRY_AFTER None"
    assert 0 < int(second.split()[1]) <= 300


DATABASE_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "qualifier_cache",
    }
}


@override_settings(CACHES=DATABASE_CACHE, AUTH_FAILURE_LIMIT=2)
def test_the_throttle_counts_in_the_database_cache_through_the_api(client, db):
    """The production default, in a request: migrate's hook creates the table (the test
    database was made under the suite's memory cache), and a refusal is read back from it."""
    from django.core.cache import cache

    from qualifier.apps import create_cache_tables

    create_cache_tables(using="default", verbosity=0)

    def attempt() -> int:
        return client.get(RECOVERY, headers={"Authorization": "Bearer wrong"}).status_code

    assert [attempt() for _ in range(3)] == [401, 401, 429]
    assert cache.get("auth-failures:api-token:127.0.0.1:count") == 2


@override_settings(AUTH_FAILURE_LIMIT=2)
def test_many_other_clients_do_not_push_a_count_out_of_the_default_cache(db):
    """Django's database cache keeps 300 entries unless told otherwise, then culls a third of
    them: 200 other clients would reset a guesser's count."""
    import qualifier.settings
    from common.throttle import SIGN_IN
    from qualifier.apps import create_cache_tables

    def request(address: str):
        return RequestFactory().post("/accounts/login/", REMOTE_ADDR=address)

    with override_settings(CACHES=qualifier.settings.CACHES):
        create_cache_tables(using="default", verbosity=0)
        guesser = request("10.0.0.7")  # its keys sort before the others: culled first
        SIGN_IN.count(guesser)
        SIGN_IN.count(guesser)
        for n in range(200):
            SIGN_IN.count(request(f"198.51.100.{n}"))
        assert SIGN_IN.retry_after(guesser) is not None
