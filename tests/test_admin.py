"""The recovery admin, through the test client as a staff operator (view + change on runs,
view on events) and as a staff viewer without the change permission."""

from __future__ import annotations

import datetime as dt
import re
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import result_headers, results
from django.contrib.auth.models import Permission, User
from django.contrib.messages import constants as message_levels
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags
from django.utils.text import Truncator, capfirst

from recovery import admin as recovery_admin
from recovery import sweep
from recovery.admin import QualificationRunAdmin
from recovery.models import QualificationRun, RecoveryEvent, RecoverySource, RunStatus
from recovery.sweep import recover_stuck_runs, stuck_runs

RUNS_URL = reverse("admin:recovery_qualificationrun_changelist")
EVENTS_URL = reverse("admin:recovery_recoveryevent_changelist")

pytestmark = pytest.mark.django_db


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def operator() -> User:
    return staff(
        "operator", "view_qualificationrun", "change_qualificationrun", "view_recoveryevent"
    )


@pytest.fixture
def viewer() -> User:
    return staff("viewer", "view_qualificationrun", "view_recoveryevent")


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


def text(html: Any) -> str:
    return " ".join(strip_tags(str(html)).replace("\xa0", " ").split())


def listed(response) -> list[int]:
    assert response.status_code == 200
    return [run.pk for run in response.context["cl"].result_list]


def rows(response) -> dict[int, dict[str, str]]:
    """Each listed object's cells as HTML by column name, keyed by pk."""
    cl = response.context["cl"]
    return {
        obj.pk: {name: str(cell) for name, cell in zip(cl.list_display, row, strict=True)}
        for obj, row in zip(cl.result_list, results(cl), strict=True)
    }


def headers(response) -> list[str]:
    return [capfirst(text(header["text"])) for header in result_headers(response.context["cl"])]


def messages_of(response) -> list[tuple[int, str]]:
    return [(m.level, text(m.message)) for m in response.context["messages"]]


def post_action(client, action: str, runs, **extra: str):
    data = {"action": action, "_selected_action": [run.pk for run in runs], **extra}
    return client.post(RUNS_URL, data, follow=True)


def refreshed(*runs: QualificationRun) -> list[str]:
    return [QualificationRun.objects.get(pk=run.pk).status for run in runs]


# --- the changelist --------------------------------------------------------------------------


def test_run_list_shows_id_user_status_progress_age_heartbeat_and_stuck(
    operator_client, make_run, alice
):
    stuck = make_run(
        total=10,
        completed=5,
        created_minutes_ago=40,
        started_minutes_ago=39,
        heartbeat_minutes_ago=12,
        user=alice,
    )
    fresh = make_run(RunStatus.PENDING, total=3)

    response = operator_client.get(RUNS_URL)

    assert headers(response)[1:] == [
        "ID",
        "User",
        "Status",
        "Progress",
        "Age",
        "Last heartbeat",
        "Stuck",
    ]
    cells = {name: text(cell) for name, cell in rows(response)[stuck.pk].items()}
    assert cells["id"] == str(stuck.pk)
    assert cells["user"] == "alice"
    assert cells["status"] == "Processing"
    assert cells["progress"] == "5/10"
    assert cells["age"] == "40 minutes"
    assert cells["last_heartbeat"] == "12 minutes ago"
    assert cells["stuck"] == "Yes"
    cells = {name: text(cell) for name, cell in rows(response)[fresh.pk].items()}
    assert (cells["user"], cells["status"], cells["progress"]) == ("-", "Pending", "0/3")
    assert re.fullmatch(r"\d+ seconds?", cells["age"])
    assert cells["last_heartbeat"] == "—"
    assert cells["stuck"] == "No"


def test_stuck_column_says_yes_or_no_in_words_not_icons(operator_client, make_run):
    """Boolean icons showed a red cross for every healthy run and a green tick for a stuck one."""
    make_run(created_minutes_ago=20, heartbeat_minutes_ago=10)
    make_run(created_minutes_ago=1)

    html = operator_client.get(RUNS_URL).content.decode()

    assert "icon-yes.svg" not in html
    assert "icon-no.svg" not in html


def test_stuck_column_follows_the_configured_timeout(operator_client, make_run, settings):
    run = make_run(created_minutes_ago=20, heartbeat_minutes_ago=10)
    assert text(rows(operator_client.get(RUNS_URL))[run.pk]["stuck"]) == "Yes"

    settings.STUCK_RUN_TIMEOUT_MINUTES = 15

    assert text(rows(operator_client.get(RUNS_URL))[run.pk]["stuck"]) == "No"


def test_finished_runs_are_never_shown_as_stuck(operator_client, make_run):
    old = make_run(RunStatus.COMPLETED, created_minutes_ago=600, heartbeat_minutes_ago=590)

    assert text(rows(operator_client.get(RUNS_URL))[old.pk]["stuck"]) == "No"


def test_runs_are_listed_newest_first(operator_client, make_run):
    oldest = make_run(created_minutes_ago=30)
    newest = make_run(created_minutes_ago=1)
    middle = make_run(created_minutes_ago=10)

    assert listed(operator_client.get(RUNS_URL)) == [newest.pk, middle.pk, oldest.pk]


def test_run_list_queries_do_not_grow_with_the_number_of_runs(operator_client, make_run, alice):
    make_run(user=alice, heartbeat_minutes_ago=1)
    with CaptureQueriesContext(connection) as few:
        assert operator_client.get(RUNS_URL).status_code == 200
    for minutes in range(20):
        make_run(user=alice, created_minutes_ago=minutes, heartbeat_minutes_ago=minutes)
    with CaptureQueriesContext(connection) as many:
        assert len(listed(operator_client.get(RUNS_URL))) == 21

    assert len(many) == len(few)


# --- filters ---------------------------------------------------------------------------------


@pytest.fixture
def mixed_runs(make_run) -> dict[str, QualificationRun]:
    return {
        "stuck": make_run(created_minutes_ago=20, heartbeat_minutes_ago=6),
        "stuck_pending": make_run(RunStatus.PENDING, created_minutes_ago=8),
        "alive": make_run(created_minutes_ago=20, heartbeat_minutes_ago=1),
        "fresh_pending": make_run(RunStatus.PENDING, created_minutes_ago=0.05),
        "old_finished": make_run(
            RunStatus.COMPLETED, created_minutes_ago=3000, heartbeat_minutes_ago=2900
        ),
        "old_failed": make_run(RunStatus.FAILED, created_minutes_ago=100),
    }


def test_stuck_filter_yes_lists_exactly_what_the_sweep_would_recover(operator_client, mixed_runs):
    shown = set(listed(operator_client.get(RUNS_URL, {"stuck": "yes"})))

    assert shown == {mixed_runs["stuck"].pk, mixed_runs["stuck_pending"].pk}
    assert shown == set(stuck_runs(5).values_list("pk", flat=True))


def test_stuck_filter_no_lists_live_and_finished_runs(operator_client, mixed_runs):
    shown = set(listed(operator_client.get(RUNS_URL, {"stuck": "no"})))

    assert shown == {
        mixed_runs[name].pk for name in ("alive", "fresh_pending", "old_finished", "old_failed")
    }


def test_stuck_filter_uses_the_configured_timeout(operator_client, mixed_runs, settings):
    settings.STUCK_RUN_TIMEOUT_MINUTES = 7

    response = operator_client.get(RUNS_URL, {"stuck": "yes"})

    assert listed(response) == [mixed_runs["stuck_pending"].pk]
    assert "Yes (worker dead, or no progress for 7+ min)" in response.text


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ("lt5m", {"fresh_pending"}),
        ("5m-30m", {"stuck", "stuck_pending", "alive"}),
        ("30m-24h", {"old_failed"}),
        ("gt24h", {"old_finished"}),
    ],
)
def test_age_filter_buckets_runs_by_creation_time(operator_client, mixed_runs, bucket, expected):
    shown = set(listed(operator_client.get(RUNS_URL, {"age": bucket})))

    assert shown == {mixed_runs[name].pk for name in expected}


def test_age_buckets_do_not_overlap_at_their_boundaries(operator_client, make_run):
    just_under = make_run(created_minutes_ago=4.9)
    just_over = make_run(created_minutes_ago=5.1)

    assert listed(operator_client.get(RUNS_URL, {"age": "lt5m"})) == [just_under.pk]
    assert listed(operator_client.get(RUNS_URL, {"age": "5m-30m"})) == [just_over.pk]


def test_status_filter_lists_only_that_status(operator_client, mixed_runs):
    shown = listed(operator_client.get(RUNS_URL, {"status__exact": RunStatus.FAILED}))

    assert shown == [mixed_runs["old_failed"].pk]


def test_filters_combine(operator_client, mixed_runs):
    shown = listed(operator_client.get(RUNS_URL, {"stuck": "yes", "status__exact": "PENDING"}))

    assert shown == [mixed_runs["stuck_pending"].pk]


# --- search ----------------------------------------------------------------------------------


def test_search_by_id_finds_that_run_only(operator_client, make_run):
    runs = [make_run() for _ in range(12)]
    wanted = runs[0]

    assert listed(operator_client.get(RUNS_URL, {"q": str(wanted.pk)})) == [wanted.pk]


def test_search_by_username_and_by_email(operator_client, make_run, alice, bob):
    alices = make_run(user=alice)
    bobs = make_run(user=bob)
    make_run()

    assert listed(operator_client.get(RUNS_URL, {"q": "ALI"})) == [alices.pk]
    assert listed(operator_client.get(RUNS_URL, {"q": "other.test"})) == [bobs.pk]


@pytest.mark.parametrize("term", ["alice", "12abc", "-", "99999999999999999999999", "' OR 1=1"])
def test_non_numeric_or_out_of_range_search_does_not_crash(operator_client, make_run, alice, term):
    make_run(user=alice)

    response = operator_client.get(RUNS_URL, {"q": term})

    assert response.status_code == 200
    assert listed(response) == ([QualificationRun.objects.get().pk] if term == "alice" else [])


# --- read-only lifecycle ---------------------------------------------------------------------


def test_runs_cannot_be_added_in_the_admin(operator_client):
    assert operator_client.get(reverse("admin:recovery_qualificationrun_add")).status_code == 403
    assert reverse("admin:recovery_qualificationrun_add") not in operator_client.get(RUNS_URL).text


def test_lifecycle_fields_cannot_be_changed_through_the_change_form(
    operator_client, make_run, alice, bob
):
    run = make_run(total=10, completed=4, attempts=1, user=alice)
    url = reverse("admin:recovery_qualificationrun_change", args=[run.pk])
    form = operator_client.get(url).context["adminform"].form

    assert list(form.fields) == ["user"]
    response = operator_client.post(
        url,
        {
            "user": bob.pk,
            "status": RunStatus.COMPLETED,
            "completed": 10,
            "total": 10,
            "attempts": 9,
            "failure_reason": "typed in",
            "heartbeat_at": "2000-01-01 00:00:00",
            "recovery_events-TOTAL_FORMS": "0",
            "recovery_events-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.user == bob
    assert (run.status, run.progress, run.attempts, run.failure_reason) == (
        RunStatus.PROCESSING,
        "4/10",
        1,
        "",
    )
    assert run.heartbeat_at is None


def test_the_run_page_shows_the_last_heartbeat_once_with_its_time_and_age(
    operator_client, make_run
):
    run = make_run(created_minutes_ago=20, heartbeat_minutes_ago=3)
    url = reverse("admin:recovery_qualificationrun_change", args=[run.pk])

    page = text(operator_client.get(url).content.decode())

    assert page.count("Last heartbeat") == 1
    assert re.search(r"Last heartbeat: .+ \(3 minutes ago\)", page)


def test_a_run_with_recovery_events_offers_no_delete(superuser_client, make_run):
    """Its events PROTECT it, so a Delete button could only lead to an error."""
    recovered = make_run(created_minutes_ago=30, heartbeat_minutes_ago=20)
    recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    plain = make_run(RunStatus.COMPLETED)

    def page(run: QualificationRun, view: str = "change") -> Any:
        return superuser_client.get(
            reverse(f"admin:recovery_qualificationrun_{view}", args=[run.pk])
        )

    assert 'class="deletelink"' not in page(recovered).content.decode()
    assert page(recovered, "delete").status_code == 403
    assert 'class="deletelink"' in page(plain).content.decode()
    assert page(plain, "delete").status_code == 200
    assert QualificationRun.objects.filter(pk=recovered.pk).exists()


def test_saving_a_run_writes_only_the_edited_fields_over_newer_state(rf, make_run, operator, bob):
    """The form's instance was read before a sweep failed the run: saving it must not put
    PROCESSING back."""
    stale = make_run(created_minutes_ago=30, heartbeat_minutes_ago=20)
    recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    model_admin = QualificationRunAdmin(QualificationRun, admin.site)
    request = rf.post("/")
    request.user = operator
    form_class = model_admin.get_form(request, stale, change=True)
    form = form_class({"user": bob.pk}, instance=stale)
    assert form.is_valid(), form.errors

    model_admin.save_model(request, form.save(commit=False), form, change=True)

    run = QualificationRun.objects.get(pk=stale.pk)
    assert (run.status, run.user) == (RunStatus.FAILED, bob)


# --- action 1: mark stuck runs as failed -----------------------------------------------------


def test_mark_stuck_fails_only_stuck_runs_and_says_why_others_were_skipped(
    operator_client, operator, make_run
):
    stuck = make_run(total=10, completed=3, created_minutes_ago=30, heartbeat_minutes_ago=9)
    stuck_pending = make_run(RunStatus.PENDING, created_minutes_ago=6)
    alive = make_run(created_minutes_ago=30, heartbeat_minutes_ago=1)
    finished = make_run(RunStatus.COMPLETED, created_minutes_ago=30, heartbeat_minutes_ago=20)

    response = post_action(
        operator_client, "mark_stuck_failed", [stuck, stuck_pending, alive, finished]
    )

    assert messages_of(response) == [
        (
            message_levels.WARNING,
            "Marked 2 stuck runs as failed; 2 skipped: 1 still alive (its worker beats or it made "
            "progress lately), 1 already finished.",
        )
    ]
    assert refreshed(stuck, stuck_pending, alive, finished) == [
        RunStatus.FAILED,
        RunStatus.FAILED,
        RunStatus.PROCESSING,
        RunStatus.COMPLETED,
    ]
    events = RecoveryEvent.objects.order_by("run_id")
    assert [(e.run_id, e.source, e.actor) for e in events] == [
        (stuck.pk, RecoverySource.ADMIN, operator),
        (stuck_pending.pk, RecoverySource.ADMIN, operator),
    ]
    assert events[0].progress == "3/10"
    assert "recovered from the admin by operator" in events[0].reason


def test_mark_stuck_reports_success_when_nothing_was_skipped(operator_client, make_run):
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)

    response = post_action(operator_client, "mark_stuck_failed", [stuck])

    assert messages_of(response) == [(message_levels.SUCCESS, "Marked 1 stuck run as failed.")]
    assert refreshed(stuck) == [RunStatus.FAILED]


def test_mark_stuck_uses_the_configured_timeout(operator_client, make_run, settings):
    settings.STUCK_RUN_TIMEOUT_MINUTES = 10
    silent_9 = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)

    response = post_action(operator_client, "mark_stuck_failed", [silent_9])

    assert messages_of(response) == [
        (
            message_levels.WARNING,
            "Marked 0 stuck runs as failed; 1 skipped: 1 still alive (its worker beats or it made "
            "progress lately).",
        )
    ]
    assert refreshed(silent_9) == [RunStatus.PROCESSING]
    assert not RecoveryEvent.objects.exists()


def test_mark_stuck_never_fails_a_run_twice(operator_client, make_run):
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)
    post_action(operator_client, "mark_stuck_failed", [stuck])

    response = post_action(operator_client, "mark_stuck_failed", [stuck])

    assert messages_of(response) == [
        (message_levels.WARNING, "Marked 0 stuck runs as failed; 1 skipped: 1 already finished.")
    ]
    assert RecoveryEvent.objects.count() == 1


# --- action 2: force-fail with confirmation --------------------------------------------------


def confirmation_form(response, *, csrf: bool = False) -> dict[str, Any]:
    """The hidden fields the confirmation page posts back (the CSRF token only if asked)."""
    html = response.text
    start = html.index('<form method="post">')
    form = html[start : html.index("</form>", start)]
    fields: dict[str, Any] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form):
        if name == "_selected_action":
            fields.setdefault(name, []).append(value)
        elif name != "csrfmiddlewaretoken" or csrf:
            fields[name] = value
    return fields


def test_force_fail_asks_for_confirmation_and_changes_nothing_until_confirmed(
    operator_client, make_run, alice
):
    alive = make_run(total=8, completed=2, heartbeat_minutes_ago=0.5, user=alice)
    finished = make_run(RunStatus.COMPLETED)

    response = post_action(operator_client, "force_fail_selected", [alive, finished])

    assert response.status_code == 200
    assert "admin/recovery/qualificationrun/force_fail_confirmation.html" in [
        t.name for t in response.templates
    ]
    table = text(response.text.split('id="force-fail-runs">')[1].split("</table>")[0])
    assert f"{alive.pk} alice Processing 2/8" in table
    assert str(alive.worker) in table
    skipped = text(response.text.split('id="force-fail-skipped">')[1].split("</ul>")[0])
    assert skipped == str(finished)
    assert confirmation_form(response) == {
        "_selected_action": sorted([str(alive.pk), str(finished.pk)]),
        "action": "force_fail_selected",
        "post": "yes",
    }
    assert refreshed(alive, finished) == [RunStatus.PROCESSING, RunStatus.COMPLETED]
    assert not RecoveryEvent.objects.exists()


def test_confirmed_force_fail_fails_live_runs_and_skips_finished_ones(
    operator_client, operator, make_run
):
    alive = make_run(total=8, completed=2, heartbeat_minutes_ago=0.5)
    pending = make_run(RunStatus.PENDING)
    finished = make_run(RunStatus.COMPLETED)
    confirmation = post_action(operator_client, "force_fail_selected", [alive, pending, finished])

    response = operator_client.post(RUNS_URL, confirmation_form(confirmation), follow=True)

    assert messages_of(response) == [
        (message_levels.WARNING, "Force-failed 2 runs; 1 skipped: 1 already finished.")
    ]
    assert refreshed(alive, pending, finished) == [
        RunStatus.FAILED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
    ]
    events = RecoveryEvent.objects.order_by("run_id")
    assert [(e.run_id, e.source, e.actor, e.from_status) for e in events] == [
        (alive.pk, RecoverySource.ADMIN, operator, RunStatus.PROCESSING),
        (pending.pk, RecoverySource.ADMIN, operator, RunStatus.PENDING),
    ]
    assert events[0].reason.startswith("Stopped by an operator")
    assert events[0].progress == "2/8"


def test_force_fail_confirmation_page_carries_a_csrf_token(operator, make_run):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    alive = make_run(heartbeat_minutes_ago=0.5)
    token = re.search(
        r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(RUNS_URL).text
    ).group(1)
    confirmation = client.post(
        RUNS_URL,
        {
            "action": "force_fail_selected",
            "_selected_action": [alive.pk],
            "csrfmiddlewaretoken": token,
        },
    )
    assert confirmation.status_code == 200

    response = client.post(RUNS_URL, confirmation_form(confirmation, csrf=True))

    assert response.status_code == 302
    assert refreshed(alive) == [RunStatus.FAILED]


def test_force_fail_confirmation_lists_a_bounded_number_of_runs_but_submits_all(
    operator_client, make_run, monkeypatch
):
    monkeypatch.setattr(recovery_admin, "CONFIRMATION_MAX_DISPLAY", 2)
    active = [make_run(heartbeat_minutes_ago=1) for _ in range(3)]
    finished = [make_run(RunStatus.FAILED) for _ in range(3)]

    response = post_action(operator_client, "force_fail_selected", active + finished)

    table = response.text.split('id="force-fail-runs">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 2  # the header and two runs
    assert "… and 1 more run." in text(response.text)
    assert text(response.text.split('id="force-fail-skipped">')[1].split("</ul>")[0]).endswith(
        "… and 1 more."
    )
    assert len(confirmation_form(response)["_selected_action"]) == 6


def test_force_fail_of_only_finished_runs_skips_the_confirmation(operator_client, make_run):
    done = make_run(RunStatus.COMPLETED)
    failed = make_run(RunStatus.FAILED)

    response = post_action(operator_client, "force_fail_selected", [done, failed])

    assert response.redirect_chain  # straight back to the list, no confirmation page
    assert messages_of(response) == [
        (
            message_levels.WARNING,
            "Nothing to force-fail: all 2 selected runs have already finished.",
        )
    ]
    assert not RecoveryEvent.objects.exists()


def test_confirmed_force_fail_skips_a_run_that_finished_after_the_confirmation_page(
    operator_client, make_run
):
    run = make_run(attempts=1)
    confirmation = post_action(operator_client, "force_fail_selected", [run])
    assert run.complete()

    response = operator_client.post(RUNS_URL, confirmation_form(confirmation), follow=True)

    assert messages_of(response) == [
        (
            message_levels.WARNING,
            "Nothing to force-fail: the selected run has already finished.",
        )
    ]
    assert refreshed(run) == [RunStatus.COMPLETED]
    assert not RecoveryEvent.objects.exists()


# --- without the change permission -----------------------------------------------------------


def test_viewer_sees_runs_but_no_actions(viewer_client, make_run):
    make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)

    response = viewer_client.get(RUNS_URL)

    assert response.status_code == 200
    assert response.context["action_form"] is None
    assert "mark_stuck_failed" not in response.text
    assert "force_fail_selected" not in response.text


@pytest.mark.parametrize(
    ("action", "extra"),
    [
        ("mark_stuck_failed", {}),
        ("force_fail_selected", {}),
        ("force_fail_selected", {"post": "yes"}),
    ],
)
def test_viewer_cannot_run_the_actions(viewer_client, make_run, action, extra):
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)

    response = post_action(viewer_client, action, [stuck], **extra)

    assert response.status_code == 200
    assert response.context["action_form"] is None
    assert messages_of(response) == []
    assert refreshed(stuck) == [RunStatus.PROCESSING]
    assert not RecoveryEvent.objects.exists()


def test_viewer_cannot_save_a_run(viewer_client, make_run, bob):
    run = make_run()
    url = reverse("admin:recovery_qualificationrun_change", args=[run.pk])

    assert viewer_client.post(url, {"user": bob.pk}).status_code == 403
    run.refresh_from_db()
    assert run.user is None


def test_staff_without_run_permissions_is_forbidden(client, make_run):
    client.force_login(staff("nobody"))

    assert client.get(RUNS_URL).status_code == 403
    assert client.get(EVENTS_URL).status_code == 403


# --- recovery events -------------------------------------------------------------------------


@pytest.fixture
def events(make_run, operator) -> dict[str, RecoveryEvent]:
    by_command = make_run(total=10, completed=7, created_minutes_ago=30, heartbeat_minutes_ago=9)
    recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    by_admin = make_run(RunStatus.PENDING, total=4, created_minutes_ago=30)
    recover_stuck_runs(source=RecoverySource.ADMIN, actor=operator, log=False)
    last_year = make_run(RunStatus.FAILED, created_minutes_ago=60 * 24 * 400)
    old = RecoveryEvent.objects.create(
        run=last_year,
        created_at=timezone.now() - dt.timedelta(days=400),
        from_status=RunStatus.PROCESSING,
        to_status=RunStatus.FAILED,
        source=RecoverySource.STARTUP,
        reason="no sign of life for 6 min; recovered at server start",
        completed=0,
        total=10,
        host="old-host",
        pid=7,
    )
    return {
        "command": RecoveryEvent.objects.get(run=by_command),
        "admin": RecoveryEvent.objects.get(run=by_admin),
        "old": old,
    }


def test_event_list_shows_run_time_transition_source_progress_actor_origin_reason(
    operator_client, events
):
    response = operator_client.get(EVENTS_URL)

    assert headers(response) == [
        "Run",
        "Prospects",
        "Recovered at",
        "From → to",
        "Source",
        "Progress",
        "Actor",
        "Host/pid",
        "Reason",
    ]
    event = events["admin"]
    cells = rows(response)[event.pk]
    run_url = reverse("admin:recovery_qualificationrun_change", args=[event.run_id])
    assert f'href="{run_url}"' in cells["run_link"]
    assert text(cells["run_link"]) == str(event.run_id)
    assert text(cells["prospects"]) == "all"  # a run worked whole; a slice shows its range
    shown = [text(cells[name]) for name in list(cells)[3:]]
    assert shown == [
        "Pending → Failed",
        "Admin action",
        "0/4",
        "operator",
        f"{event.host}/{event.pid}",
        Truncator(event.reason).chars(80),
    ]
    cells = rows(response)[events["command"].pk]
    shown = [text(cells[name]) for name in ("transition", "source", "progress", "actor")]
    assert shown == ["Processing → Failed", "Management command", "7/10", "-"]


def test_event_list_filters_by_source(operator_client, events):
    shown = listed(operator_client.get(EVENTS_URL, {"source__exact": RecoverySource.ADMIN}))

    assert shown == [events["admin"].pk]


def date_filter_link(response, label: str) -> str:
    (spec,) = [spec for spec in response.context["cl"].filter_specs if spec.title == "recovered at"]
    (choice,) = [
        choice for choice in spec.choices(response.context["cl"]) if choice["display"] == label
    ]
    return choice["query_string"]


def test_event_list_filters_by_date(operator_client, events):
    today = date_filter_link(operator_client.get(EVENTS_URL), "Today")
    recent = set(listed(operator_client.get(EVENTS_URL + today)))
    old_year = timezone.localtime(events["old"].created_at).year
    by_year = listed(operator_client.get(EVENTS_URL, {"created_at__year": old_year}))

    assert recent == {events["command"].pk, events["admin"].pk}
    assert by_year == [events["old"].pk]


def test_event_list_date_hierarchy_links_each_year_with_events(operator_client, events):
    response = operator_client.get(EVENTS_URL)
    nav = response.text.split('aria-labelledby="date-hierarchy-label"')[1].split("</nav>")[0]
    years = {timezone.localtime(event.created_at).year for event in RecoveryEvent.objects.all()}

    assert set(map(int, re.findall(r"created_at__year=(\d+)", nav))) == years
    assert len(years) == 2


def test_event_list_queries_do_not_grow_with_the_number_of_events(
    operator_client, make_run, operator
):
    make_run(created_minutes_ago=30)
    recover_stuck_runs(source=RecoverySource.ADMIN, actor=operator, log=False)
    with CaptureQueriesContext(connection) as few:
        assert len(listed(operator_client.get(EVENTS_URL))) == 1
    for _ in range(15):
        make_run(created_minutes_ago=30)
    recover_stuck_runs(source=RecoverySource.ADMIN, actor=operator, log=False)
    with CaptureQueriesContext(connection) as many:
        assert len(listed(operator_client.get(EVENTS_URL))) == 16

    assert len(many) == len(few)


def test_events_cannot_be_added_changed_or_deleted(operator_client, events, superuser_client):
    event = events["admin"]
    change_url = reverse("admin:recovery_recoveryevent_change", args=[event.pk])
    for client in (operator_client, superuser_client):
        assert client.get(reverse("admin:recovery_recoveryevent_add")).status_code == 403
        assert client.get(change_url).status_code == 200  # view only
        assert client.post(change_url, {"reason": "edited"}).status_code == 403
        assert (
            client.get(reverse("admin:recovery_recoveryevent_delete", args=[event.pk])).status_code
            == 403
        )
        assert client.get(EVENTS_URL).context["action_form"] is None
    event.refresh_from_db()
    assert event.reason != "edited"


@pytest.fixture
def superuser_client(db) -> Any:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_run_page_shows_its_events_read_only(operator_client, events):
    event = events["command"]
    url = reverse("admin:recovery_qualificationrun_change", args=[event.run_id])

    response = operator_client.get(url)

    (inline,) = response.context["inline_admin_formsets"]
    assert inline.opts.model is RecoveryEvent
    assert (
        inline.has_add_permission,
        inline.has_change_permission,
        inline.has_delete_permission,
    ) == (False, False, False)
    assert event.reason in response.text
    assert "Management command" in text(response.text)
    assert events["admin"].reason not in response.text


# --- skipped because busy, and bad input -----------------------------------------------------


@contextmanager
def row_locked_elsewhere(run: QualificationRun):
    """Holds the run's row lock from another connection, as a worker writing its heartbeat."""
    import psycopg

    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=False) as other:
        other.execute(
            f"SELECT id FROM {QualificationRun._meta.db_table} WHERE id = %s FOR UPDATE",
            [run.pk],
        )
        yield
        other.rollback()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("action", "extra", "done"),
    [
        ("mark_stuck_failed", {}, "Marked 0 stuck runs as failed"),
        ("force_fail_selected", {"post": "yes"}, "Force-failed 0 runs"),
    ],
)
def test_a_run_locked_by_a_concurrent_update_is_skipped_as_busy(
    operator_client, make_run, action, extra, done
):
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)

    with row_locked_elsewhere(stuck):
        response = post_action(operator_client, action, [stuck], **extra)

    assert messages_of(response) == [
        (
            message_levels.WARNING,
            f"{done}; 1 skipped: 1 busy with a concurrent update, try again.",
        )
    ]
    assert refreshed(stuck) == [RunStatus.PROCESSING]
    assert not RecoveryEvent.objects.exists()


@pytest.mark.parametrize(
    ("action", "extra"), [("mark_stuck_failed", {}), ("force_fail_selected", {"post": "yes"})]
)
def test_a_sweep_refusing_its_input_is_shown_as_an_error(
    operator_client, make_run, monkeypatch, action, extra
):
    """A run deleted between the selection and the sweep: the sweep refuses, nothing changes."""
    run = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)
    real_check = sweep.check_run_ids

    def deleted_meanwhile(run_ids):
        QualificationRun.objects.filter(pk=run.pk).delete()
        return real_check(run_ids)

    monkeypatch.setattr(sweep, "check_run_ids", deleted_meanwhile)

    response = post_action(operator_client, action, [run], **extra)

    assert messages_of(response) == [
        (message_levels.ERROR, f"Nothing changed: No qualification run with id {run.pk}.")
    ]
    assert not RecoveryEvent.objects.exists()
