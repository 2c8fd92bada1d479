"""The recovery overview in the admin: who may see it, its figures after real recoveries, its
hours in the site's time zone, a fixed number of queries, and well-formed SVG charts."""


from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
import zoneinfo
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from recovery import overview
from recovery.charts import nice_scale
from recovery.models import (
    QualificationRun,
    RecoveryCause,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
)
from recovery.sweep import continue_failed_runs, hand_back, recover_stuck_runs
from tests.conftest import make_worker

URL = reverse("admin:recovery_overview")
SVG = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.django_db


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def operator_client(client: Any) -> Any:
    client.force_login(staff("operator", "view_qualificationrun", "view_worker"))
    return client


def text(response: Any) -> str:
    return " ".join(strip_tags(response.content.decode()).replace("\xa0", " ").split())


def charts(response: Any) -> dict[str, ET.Element]:
    """Each inline <svg> chart of the page, parsed as XML (which fails on malformed markup)."""
    found = {}
    for markup in re.findall(
        r"<svg [^>]*class=\"recovery-chart\".*?</svg>", response.content.decode(), re.S
    ):
        svg = ET.fromstring(markup)
        found[svg.get("id")] = svg
    return found


def events_at(*moments: dt.datetime, cause: str = RecoveryCause.WORKER_SILENT) -> None:
    """Recovery events at the given moments, each for a run of its own (heartbeat 40 s before)."""
    runs = QualificationRun.objects.bulk_create(
        QualificationRun(status=RunStatus.FAILED, total=1) for _ in moments
    )
    RecoveryEvent.objects.bulk_create(
        RecoveryEvent(
            run=run,
            created_at=moment,
            from_status=RunStatus.PROCESSING,
            to_status=RunStatus.FAILED,
            source=RecoverySource.SWEEPER,
            cause=cause,
            reason="test",
            completed=0,
            total=1,
            heartbeat_at=moment - dt.timedelta(seconds=40),
            host="h",
            pid=1,
        )
        for run, moment in zip(runs, moments, strict=True)
    )


# --- who may see it ----------------------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_admin_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={URL}"


def test_signed_in_users_who_are_not_staff_are_sent_to_the_admin_login(client):
    user = User.objects.create_user("user", "u@example.com", "pw")
    user.user_permissions.set(Permission.objects.filter(codename="view_qualificationrun"))
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_a_permission_on_runs_are_refused(client):
    client.force_login(staff("clerk", "view_user"))
    assert client.get(URL).status_code == 403


@pytest.mark.parametrize("codename", ["view_qualificationrun", "change_qualificationrun"])
def test_staff_who_may_see_or_change_runs_see_the_overview(client, codename):
    client.force_login(staff("operator", codename))
    response = client.get(URL)
    assert response.status_code == 200
    assert "Recovery overview" in text(response)
    assert response.templates[0].name == "admin/recovery/overview.html"


def test_the_overview_is_linked_from_the_index_the_app_and_the_runs_list(operator_client):
    for url in (
        reverse("admin:index"),
        reverse("admin:app_list", args=["recovery"]),
        reverse("admin:recovery_qualificationrun_changelist"),
    ):
        response = operator_client.get(url)
        assert response.status_code == 200
        assert f'href="{URL}"' in response.content.decode(), url


def test_the_index_does_not_link_the_overview_for_staff_who_may_not_see_it(client):
    client.force_login(staff("clerk", "view_user"))
    assert f'href="{URL}"' not in client.get(reverse("admin:index")).content.decode()


def test_worker_links_need_the_worker_view_permission(client, make_run):
    make_run()  # a run on a live worker
    client.force_login(staff("runs-only", "view_qualificationrun"))
    page = client.get(URL).content.decode()
    assert reverse("admin:recovery_worker_changelist") not in page
    assert "worker-host.test:4242" in page


# --- figures ---------------------------------------------------------------------------------


def test_the_page_shows_the_figures_after_real_recoveries(operator_client, make_run, settings):
    settings.RECOVERY_POLICY = "fail"
    busy = make_run(heartbeat_minutes_ago=0)  # on a live worker
    make_run(RunStatus.PENDING)
    make_run(RunStatus.COMPLETED)
    # Dead: worker silent for 5 minutes, last heartbeat 3 and 20 minutes ago.
    first = make_run(heartbeat_minutes_ago=3, worker_beat_seconds_ago=300)
    make_run(heartbeat_minutes_ago=20, worker_beat_seconds_ago=300)
    # Dead: worker row gone.
    make_run(heartbeat_minutes_ago=1.5, worker_beat_seconds_ago=None)
    report = recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    assert report.recovered_count == 3
    # A hand-back at shutdown is a recovery (not of a dead run); a Continue is not one at all.
    continue_failed_runs([first.pk], source=RecoverySource.CONTINUE)
    handed = make_run(heartbeat_minutes_ago=0, worker=make_worker(host="other", pid=7))
    hand_back(handed.worker, source=RecoverySource.SHUTDOWN, cause=RecoveryCause.SHUTDOWN)

    response = operator_client.get(URL)
    assert response.status_code == 200
    page = text(response)
    context = response.context
    assert context["recovered"] == 4
    assert dict(context["outcomes"]) == {"failed": 3, "back in the queue": 1}
    legend = {part.key: count for part, count in context["legend"]}
    assert legend == {"worker_gone": 1, "worker_silent": 2, "shutdown": 1}
    assert dict(context["sources"]) == {"Periodic sweeper": 3, "Worker shutdown": 1}
    statuses = {row["label"]: row["count"] for row in context["status_rows"]}
    assert statuses == {"Pending": 3, "Processing": 1, "Completed": 1, "Failed": 2}
    assert context["queued_runs"] == 3 and context["dead_runs"] == 0
    # The live workers remain (make_run made a spare one); the sweep removed the silent ones.
    hosts = [row["worker"].host for row in context["workers"]]
    assert hosts == ["other", "worker-host.test", "worker-host.test"]
    assert context["live_workers"] == 3 and context["dead_workers"] == 0
    runs = [row["run_url"] for row in context["workers"] if row["run_url"]]
    assert runs == [reverse("admin:recovery_qualificationrun_change", args=[busy.pk])]
    # All four in the current hour, the last of the 168 bars.
    hours = overview.build().hours
    assert len(hours) == 168
    assert hours[-1].total == 4 and sum(hour.total for hour in hours) == 4
    # Only the three runs found dead are in the histogram: ~90 s, ~180 s and ~1200 s.
    assert dict(context["dead_rows"]) == {
        "≤ 5 s": 0,
        "5–10 s": 0,
        "10–30 s": 0,
        "30 s–1 min": 0,
        "1–2 min": 1,
        "2–5 min": 1,
        "5–10 min": 0,
        "10–30 min": 1,
        "> 30 min": 0,
    }
    assert (
        "3 runs found dead. Half were recovered within 5 min, 9 in 10 within 30 min; on average 8 min."
        in page
    )
    assert '<dd data-figure="recovered">4</dd>' in response.content.decode()
    assert "Recovered by: Periodic sweeper (3), Worker shutdown (1)." in page


def test_live_workers_come_first_and_a_silent_one_says_so(operator_client):
    make_worker(host="b-live", pid=1, beat_seconds_ago=2)
    make_worker(host="a-silent", pid=2, beat_seconds_ago=300)
    response = operator_client.get(URL)
    assert response.context["live_workers"] == 1 and response.context["dead_workers"] == 1
    rows = re.findall(
        r'<tr class="(alive|not-responding)">(.*?)</tr>', response.content.decode(), re.S
    )
    assert [state for state, _ in rows] == ["alive", "not-responding"]
    live, silent = (" ".join(strip_tags(cells).split()) for _, cells in rows)
    assert live.startswith("b-live:1 alive") and live.endswith("ago —")
    assert silent.startswith("a-silent:2 not responding") and silent.endswith("5 min ago —")


def test_the_page_reads_well_with_no_recovery_and_no_worker(operator_client):
    response = operator_client.get(URL)
    page = text(response)
    assert "No recoveries in the last 7 days." in page
    assert "No run was found dead in the last 7 days." in page
    assert "No worker is registered" in page
    assert '<dd data-figure="last-recovery">never</dd>' in response.content.decode()
    assert charts(response) == {}


def test_the_charts_are_well_formed_svg_with_a_title_and_a_description(operator_client, make_run):
    make_run(heartbeat_minutes_ago=3, worker_beat_seconds_ago=None)
    recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    response = operator_client.get(URL)
    found = charts(response)
    assert set(found) == {"recoveries-last-day", "recoveries-per-hour", "dead-run-active"}
    for chart_id, svg in found.items():
        assert svg.get("role") == "img"
        assert svg.get("aria-labelledby") == f"{chart_id}-title {chart_id}-desc"
        assert svg.find(f"{SVG}title").text
        assert svg.find(f"{SVG}desc").text
        # The CSP forbids inline styles and scripts: nothing in the charts needs them.
        assert not [node for node in svg.iter() if "style" in node.attrib]
        assert svg.find(f".//{SVG}script") is None
    hourly = found["recoveries-per-hour"]
    assert "1 recovery from" in hourly.find(f"{SVG}desc").text
    assert [rect.get("fill") for rect in hourly.iter(f"{SVG}rect")] == ["#D55E00"]
    texts = [node.text for node in hourly.iter(f"{SVG}text")]
    assert "Recoveries per hour" in texts
    assert "Day (times in UTC)" in texts
    dead = found["dead-run-active"]
    assert "1 run found dead" in dead.find(f"{SVG}desc").text
    assert len(list(dead.iter(f"{SVG}rect"))) == 1
    assert "2–5 min" in [node.text for node in dead.iter(f"{SVG}text")]
    # The CSP header that the page is served with allows no inline style.
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]


def test_the_page_makes_the_same_queries_for_10_and_1000_recoveries(operator_client, make_run):
    make_run()
    now = timezone.now()

    def queries_with(events: int) -> int:
        RecoveryEvent.objects.all().delete()
        events_at(*(now - dt.timedelta(minutes=10 * n) for n in range(events)))
        with CaptureQueriesContext(connection) as captured:
            assert operator_client.get(URL).status_code == 200
        return len(captured)

    few, many = queries_with(10), queries_with(1000)
    assert few == many
    assert few <= 15, few  # the session, the user, its permissions, then the figures


# --- hours in the site's time zone ---------------------------------------------------------


def test_hours_are_local_hours_of_a_half_hour_time_zone(settings):
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+5:30
    now = dt.datetime(2026, 12, 1, 10, 40, tzinfo=dt.UTC)  # 16:10 in Kolkata
    events_at(
        dt.datetime(2026, 12, 1, 10, 31, tzinfo=dt.UTC),  # 16:01: this hour
        dt.datetime(2026, 12, 1, 10, 29, tzinfo=dt.UTC),  # 15:59: the hour before
        dt.datetime(2026, 11, 30, 18, 30, tzinfo=dt.UTC),  # local midnight, 1 Dec
    )
    with timezone.override(zoneinfo.ZoneInfo("Asia/Kolkata")):
        built = overview.build(now)
    assert built.hours[-1].start.isoformat() == "2026-12-01T16:00:00+05:30"
    assert built.hours[0].start.isoformat() == "2026-11-24T17:00:00+05:30"
    by_start = {hour.start.strftime("%d %H:%M"): hour.total for hour in built.hours if hour.total}
    assert by_start == {"01 16:00": 1, "01 15:00": 1, "01 00:00": 1}
    days = {day.date.isoformat(): day.total for day in built.days()}
    assert days["2026-12-01"] == 3 and len(days) == 8


def test_the_hour_that_repeats_when_clocks_go_back_is_two_bars(settings):
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    # 25 October 2026: 03:00 CEST becomes 02:00 CET, so 02:00-03:00 happens twice.
    now = dt.datetime(2026, 10, 25, 3, 30, tzinfo=dt.UTC)  # 04:30 CET
    events_at(
        dt.datetime(2026, 10, 25, 0, 15, tzinfo=dt.UTC),  # 02:15 CEST
        dt.datetime(2026, 10, 25, 1, 15, tzinfo=dt.UTC),  # 02:15 CET
        dt.datetime(2026, 10, 25, 1, 45, tzinfo=dt.UTC),  # 02:45 CET
    )
    with timezone.override(paris):
        built = overview.build(now)
    last = built.hours[-4:]
    assert [hour.start.strftime("%H:%M %Z") for hour in last] == [
        "02:00 CEST",
        "02:00 CET",
        "03:00 CET",
        "04:00 CET",
    ]
    assert [hour.total for hour in last] == [1, 2, 0, 0]


def test_the_page_labels_days_and_hours_in_the_site_time_zone(operator_client, settings):
    settings.TIME_ZONE = "America/St_Johns"  # UTC-3:30 in December
    moment = timezone.now() - dt.timedelta(seconds=1)
    events_at(moment)
    response = operator_client.get(URL)
    hourly = charts(response)["recoveries-per-hour"]
    assert "Day (times in America/St_Johns)" in [node.text for node in hourly.iter(f"{SVG}text")]
    local = timezone.localtime(moment, zoneinfo.ZoneInfo("America/St_Johns"))
    assert (
        f"{local:%H}:00: 1 worker stopped responding" in hourly.find(f".//{SVG}g/{SVG}title").text
    )


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        (0, (1, 1)),
        (1, (1, 1)),
        (3, (3, 1)),
        (5, (6, 2)),
        (9, (10, 5)),
        (17, (20, 5)),
        (1000, (1000, 500)),
    ],
)
def test_axes_end_on_round_numbers(top, expected):
    assert nice_scale(top) == expected


def test_the_last_24_hours_are_drawn_beside_the_week_with_today_labelled(operator_client):
    now = timezone.now()
    events_at(now - dt.timedelta(minutes=5), now - dt.timedelta(hours=30))
    response = operator_client.get(URL)
    found = charts(response)
    assert set(found) == {"recoveries-last-day", "recoveries-per-hour", "dead-run-active"}
    day = found["recoveries-last-day"]
    # One wide bar per hour of the last 24 (the event of 30 hours ago is not among them).
    assert len(list(day.iter(f"{SVG}rect"))) == 1
    assert "1 recovery in the last 24 hours" in day.find(f"{SVG}desc").text
    labels = [node.text for node in day.iter(f"{SVG}text") if node.get("class") == "tick"]
    assert any(label.startswith("Today") for label in labels), labels
    # The table names today "Today" rather than by its date.
    assert "Today" in text(response).split("Recoveries per day", 1)[1]
    page = response.content.decode()
    assert page.index('id="recoveries-last-day"') < page.index('id="recoveries-per-hour"')
