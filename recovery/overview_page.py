"""The recovery overview in the admin: turns the figures of `recovery.overview` into the page's
words, links and charts (the admin's QualificationRunAdmin serves it)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.http import HttpRequest
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from . import charts
from .models import DEAD_RUN_CAUSES, RecoverySource, RunStatus, Worker, spoken
from .overview import Overview, cause_label

#: Colours of the causes: Okabe and Ito's palette for colour-blind readers (black replaced by a
#: wine red, plus grey), ordered so that causes stacked next to each other differ most.
CAUSE_COLOURS = {
    "worker_gone": "#D55E00",
    "worker_silent": "#0072B2",
    "process_gone": "#E69F00",
    "no_progress": "#56B4E9",
    "no_task": "#CC79A7",
    "forced": "#009E73",
    "shutdown": "#F0E442",
    "crashed": "#882255",
    "": "#999999",
}
#: The histogram's colour: the admin's own blue.
HISTOGRAM_COLOUR = "#417690"


def _day(moment: Any) -> str:
    return formats.date_format(moment, "D j M")


def _hour(moment: Any) -> str:
    return formats.date_format(moment, "D j M, H:i")


def context(overview: Overview, request: HttpRequest, admin_site: AdminSite) -> dict[str, Any]:
    """The template's context: every figure already in words, links only where the user may
    follow them."""
    runs_url = reverse("admin:recovery_qualificationrun_changelist", current_app=admin_site.name)
    worker_admin = admin_site.get_model_admin(Worker)
    can_see_workers = worker_admin.has_view_permission(request)
    series = [
        charts.Series(cause, cause_label(cause), CAUSE_COLOURS[cause])
        for cause in overview.by_cause
    ]
    return {
        "time_zone": timezone.get_current_timezone_name(),
        "now": overview.now,
        "since": overview.since,
        "status_rows": [
            {
                "label": RunStatus(status).label,
                "count": count,
                "url": f"{runs_url}?{urlencode({'status__exact': status})}",
            }
            for status, count in overview.runs_by_status.items()
        ],
        "dead_runs": overview.dead_runs,
        "stuck_url": f"{runs_url}?stuck=yes",
        "queued_runs": overview.queued_runs,
        "queued_url": f"{runs_url}?{urlencode({'status__exact': RunStatus.PENDING})}",
        "oldest_wait": (
            None
            if overview.oldest_queued_seconds is None
            else spoken(overview.oldest_queued_seconds)
        ),
        "live_workers": overview.live_workers,
        "dead_workers": overview.dead_workers,
        "workers_hidden": max(
            overview.live_workers + overview.dead_workers - len(overview.workers), 0
        ),
        "workers_url": (
            reverse("admin:recovery_worker_changelist", current_app=admin_site.name)
            if can_see_workers
            else None
        ),
        "workers": [
            {
                "worker": worker,
                "url": reverse(
                    "admin:recovery_worker_change", args=[worker.pk], current_app=admin_site.name
                )
                if can_see_workers
                else None,
                "started": worker.process_started_at or worker.registered_at,
                "last_beat": spoken(worker.beat_seconds),
                "run_url": reverse(
                    "admin:recovery_qualificationrun_change",
                    args=[worker.current_run_id],
                    current_app=admin_site.name,
                )
                if worker.current_run_id
                else None,
            }
            for worker in overview.workers
        ],
        "recovered": overview.recovered,
        "outcomes": [
            (_("failed"), overview.by_outcome()[RunStatus.FAILED]),
            (_("back in the queue"), overview.by_outcome()[RunStatus.PENDING]),
        ],
        "sources": [
            (RecoverySource(source).label, count) for source, count in overview.by_source().items()
        ],
        "last_recovery": (
            None
            if overview.last_recovery_seconds is None
            else spoken(overview.last_recovery_seconds)
        ),
        "legend": _legend(overview, series),
        "days": [
            {
                "label": _("Today")
                if day.date == timezone.localtime(overview.now).date()
                else _day(day.first_hour),
                "from": formats.time_format(day.first_hour, "H:i")
                if day.first_hour.hour or day.first_hour.minute
                else "",
                "total": day.total,
                "causes": ", ".join(
                    f"{day.counts[part.key]} {part.label.lower()}"
                    for part in series
                    if day.counts.get(part.key)
                ),
            }
            for day in overview.days()
        ],
        "hourly_chart": hourly_chart(overview, series) if overview.recovered else None,
        "day_chart": day_chart(overview, series) if overview.recovered else None,
        "dead_count": overview.dead_count,
        "dead_rows": [(bucket.label, bucket.count) for bucket in overview.dead_buckets],
        "dead_summary": dead_summary(overview),
        "dead_causes": ", ".join(cause_label(cause).lower() for cause in DEAD_RUN_CAUSES),
        "dead_chart": dead_chart(overview) if overview.dead_count else None,
    }


def _day_label(moment: Any, today: Any) -> str:
    """ "Today" for the current local date, else the short weekday and day ("Mon 7")."""
    return _("Today") if moment.date() == today else formats.date_format(moment, "D j")


def _bars(hours: list[Any], series: list[charts.Series]) -> list[charts.Bar]:
    return [
        charts.Bar(
            tooltip=_hour(hour.start)
            + ": "
            + ", ".join(
                f"{hour.counts[part.key]} {part.label.lower()}"
                for part in series
                if hour.counts.get(part.key)
            ),
            counts=hour.counts,
        )
        for hour in hours
    ]


def hourly_chart(overview: Overview, series: list[charts.Series]) -> Any:
    bars = _bars(overview.hours, series)
    today = timezone.localtime(overview.now).date()
    marks = [(0, _day_label(overview.hours[0].start, today))]
    for index, (before, hour) in enumerate(
        zip(overview.hours, overview.hours[1:], strict=False), start=1
    ):
        if hour.start.date() != before.start.date():
            marks.append((index, _day_label(hour.start, today)))
    busiest = max(overview.hours, key=lambda hour: hour.total)
    causes = ", ".join(f"{count} {part.label.lower()}" for part, count in _legend(overview, series))
    desc = (
        ngettext(
            "%(n)d recovery from %(since)s to now",
            "%(n)d recoveries from %(since)s to now",
            overview.recovered,
        )
        % {"n": overview.recovered, "since": _hour(overview.since)}
        + ". "
        + _("The busiest hour was %(hour)s, with %(n)d.")
        % {"hour": _hour(busiest.start), "n": busiest.total}
        + " "
        + _("By cause: %(causes)s.") % {"causes": causes}
    )
    return charts.stacked_bars(
        "recoveries-per-hour",
        bars,
        series,
        marks=marks,
        title=_("Recoveries per hour by cause, last 7 days"),
        desc=desc,
        y_title=_("Recoveries per hour"),
        x_title=_("Day (times in %(zone)s)") % {"zone": timezone.get_current_timezone_name()},
    )


#: The day chart's last hours, and how often an hour is labelled on it.
DAY_HOURS = 24
DAY_MARK_EVERY = 3


def day_chart(overview: Overview, series: list[charts.Series]) -> Any:
    """The last 24 hours of the hourly chart, one wide bar per hour: a label every three hours,
    and "Today" at local midnight, so the hours of today read apart from yesterday's."""
    hours = overview.hours[-DAY_HOURS:]
    today = timezone.localtime(overview.now).date()
    marks: list[tuple[int, str]] = []
    for index, hour in enumerate(hours):
        clock = formats.time_format(hour.start, "H:i")
        if index and hour.start.date() != hours[index - 1].start.date():
            marks.append((index, f"{_day_label(hour.start, today)} {clock}"))
        elif hour.start.hour % DAY_MARK_EVERY == 0 and (
            not marks or index - marks[-1][0] >= DAY_MARK_EVERY
        ):
            marks.append((index, clock))
    if not marks or marks[0][0]:
        marks.insert(0, (0, ""))  # the first stretch has a tick, and no label of its own
    total = sum(hour.total for hour in hours)
    desc = ngettext(
        "%(n)d recovery in the last 24 hours, from %(since)s.",
        "%(n)d recoveries in the last 24 hours, from %(since)s.",
        total,
    ) % {"n": total, "since": _hour(hours[0].start)}
    return charts.stacked_bars(
        "recoveries-last-day",
        _bars(hours, series),
        series,
        marks=marks,
        title=_("Recoveries per hour by cause, last 24 hours"),
        desc=desc,
        y_title=_("Recoveries per hour"),
        x_title=_("Hour (times in %(zone)s)") % {"zone": timezone.get_current_timezone_name()},
        step=24.0,
        labels_on_ticks=True,
    )


def _legend(overview: Overview, series: list[charts.Series]) -> list[tuple[charts.Series, int]]:
    return [(part, overview.by_cause[part.key]) for part in series]


def dead_summary(overview: Overview) -> str:
    """E.g. "Half were recovered within 30 s, 9 in 10 within 2 min; on average 45 s.", from
    the buckets (the bounds that half and nine tenths of the runs stayed under)."""
    half, most = overview.dead_within(0.5), overview.dead_within(0.9)
    if half is None or most is None:
        return ""
    mean = spoken(round(overview.dead_seconds_sum / overview.dead_count))
    longest = spoken(overview.dead_buckets[-1].lower or 0)
    if half.upper is None:
        return _("Half stayed active for more than %(time)s; on average %(mean)s.") % {
            "time": longest,
            "mean": mean,
        }
    if most.upper is None:
        return _(
            "Half were recovered within %(half)s, but more than 1 in 10 stayed active for "
            "more than %(time)s; on average %(mean)s."
        ) % {"half": spoken(half.upper), "time": longest, "mean": mean}
    return _(
        "Half were recovered within %(half)s, 9 in 10 within %(most)s; on average %(mean)s."
    ) % {"half": spoken(half.upper), "most": spoken(most.upper), "mean": mean}


def dead_chart(overview: Overview) -> Any:
    rows = [(bucket.label, bucket.count) for bucket in overview.dead_buckets]
    desc = (
        ngettext(
            "%(n)d run found dead since %(since)s.",
            "%(n)d runs found dead since %(since)s.",
            overview.dead_count,
        )
        % {"n": overview.dead_count, "since": _hour(overview.since)}
        + " "
        + dead_summary(overview)
        + " "
        + "; ".join(f"{label}: {count}" for label, count in rows)
        + "."
    )
    return charts.horizontal_bars(
        "dead-run-active",
        rows,
        colour=HISTOGRAM_COLOUR,
        title=_("How long dead runs stayed active before recovery, last 7 days"),
        desc=desc,
        y_title=_("Stayed active"),
        x_title=_("Runs"),
    )
