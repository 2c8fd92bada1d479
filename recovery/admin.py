"""The admin for qualification runs and their recovery events.

Runs are created and moved through their lifecycle by the application, so the admin only
shows them, and changes state through the recovery module (`recover_stuck_runs`), the same
code path as the startup hook, the command and the API. Recovery events are an audit trail:
read-only everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import liveness, outlook, overview, overview_page, slices
from .conf import POLICY_RESUME, conf
from .models import (
    QualificationRun,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    Worker,
)
from .report import RecoveryReport, SkipReason
from .sweep import RecoveryInputError, continue_failed_runs, recover_stuck_runs, stuck_runs

#: How many runs the force-fail confirmation page lists before it says "and N more".
CONFIRMATION_MAX_DISPLAY = 100


def time_ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago, as "12 seconds" or "1 hour, 5 minutes": heartbeats come every few
    seconds, so under a minute the seconds matter (timesince says "0 minutes")."""
    if moment is None:
        return ""
    now = now or timezone.now()
    seconds = int((now - moment).total_seconds())
    if seconds < 60:
        seconds = max(seconds, 0)
        return ngettext("%(n)d\xa0second", "%(n)d\xa0seconds", seconds) % {"n": seconds}
    return timesince(moment, now)


# --- filters -----------------------------------------------------------------------------------


class StuckFilter(admin.SimpleListFilter):
    """Yes/no on the one definition of a dead run (the query the sweep and the command use)."""

    title = _("stuck")
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [
            (
                "yes",
                _("Yes (worker dead, or no progress for %(n)d+ min)")
                % {"n": conf.STUCK_RUN_TIMEOUT_MINUTES},
            ),
            ("no", _("No")),
        ]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "yes":
            return queryset.filter(pk__in=stuck_whole_runs())
        if self.value() == "no":
            return queryset.exclude(pk__in=stuck_whole_runs())
        return queryset


def stuck_whole_runs() -> Any:
    """The ids of the runs that are dead, or have a dead slice, right now (a subquery)."""
    return stuck_runs().annotate(whole=Coalesce("parent_id", "pk")).values("whole")


#: Age buckets on created_at: (parameter value, label, lower bound, upper bound) in minutes.
AGE_BUCKETS: Sequence[tuple[str, Any, int | None, int | None]] = (
    ("lt5m", _("Less than 5 minutes"), None, 5),
    ("5m-30m", _("5 to 30 minutes"), 5, 30),
    ("30m-24h", _("30 minutes to 24 hours"), 30, 24 * 60),
    ("gt24h", _("Older than 24 hours"), 24 * 60, None),
)


class AgeFilter(admin.SimpleListFilter):
    """How long ago the run was created, in buckets that match how runs go wrong."""

    title = _("age")
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(value, label) for value, label, _low, _high in AGE_BUCKETS]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        for value, _label, at_least, under in AGE_BUCKETS:
            if self.value() == value:
                now = timezone.now()
                condition = Q()
                if at_least is not None:
                    condition &= Q(created_at__lte=now - dt.timedelta(minutes=at_least))
                if under is not None:
                    condition &= Q(created_at__gt=now - dt.timedelta(minutes=under))
                return queryset.filter(condition)
        return queryset


# --- recovery events -----------------------------------------------------------------------


class ReadOnlyEventMixin:
    """Recovery events are written by the sweep only; nobody adds, edits or deletes them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("from → to"))
    def transition(self, event: RecoveryEvent) -> str:
        return f"{event.get_from_status_display()} → {event.get_to_status_display()}"

    @admin.display(description=_("progress"), ordering="completed")
    def progress(self, event: RecoveryEvent) -> str:
        return event.progress

    @admin.display(description=_("host/pid"), ordering="host")
    def origin(self, event: RecoveryEvent) -> str:
        return f"{event.host}/{event.pid}"

    @admin.display(description=_("prospects"))
    def prospects(self, event: RecoveryEvent) -> str:
        """The slice recovered, for a run worked as slices; else the whole run."""
        if event.slice_id is None:
            return gettext("all")
        return f"{event.first_prospect:,}–{event.last_prospect:,}"


class RecoveryEventInline(ReadOnlyEventMixin, admin.TabularInline):
    model = RecoveryEvent
    fk_name = "run"
    extra = 0
    can_delete = False
    fields = (
        "created_at",
        "transition",
        "source",
        "prospects",
        "progress",
        "actor",
        "origin",
        "reason",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("actor")


@admin.register(RecoveryEvent)
class RecoveryEventAdmin(ReadOnlyEventMixin, admin.ModelAdmin):
    list_display = (
        "run_link",
        "prospects",
        "created_at",
        "transition",
        "source",
        "progress",
        "actor",
        "origin",
        "short_reason",
    )
    list_filter = ("source", "created_at")
    date_hierarchy = "created_at"
    search_fields = ("run__id__exact", "actor__username", "host")
    list_select_related = ("actor",)
    ordering = ("-created_at", "-id")
    fields = (
        "run",
        "prospects",
        "created_at",
        "from_status",
        "to_status",
        "source",
        "actor",
        "progress",
        "heartbeat_at",
        "quarantined_prospect",
        "host",
        "pid",
        "reason",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ["recovery/admin.css"]}

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        """Without the navigation sidebar: eight columns and the filters leave the reason a
        few characters at 1280 px beside it."""
        return super().changelist_view(
            request, {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        )

    @admin.display(description=_("run"), ordering="run")
    def run_link(self, event: RecoveryEvent) -> str:
        url = reverse("admin:recovery_qualificationrun_change", args=[event.run_id])
        return format_html('<a href="{}">{}</a>', url, event.run_id)

    @admin.display(description=_("reason"))
    def short_reason(self, event: RecoveryEvent) -> str:
        return Truncator(event.reason).chars(80)


# --- qualification runs ----------------------------------------------------------------------


@admin.register(QualificationRun)
class QualificationRunAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "status", "progress", "age", "last_heartbeat", "stuck")
    list_display_links = ("id",)
    list_filter = ("status", StuckFilter, AgeFilter)
    # "id__exact" is validated before it is queried: a search for "alice" skips the id lookup
    # instead of failing to cast text to a number.
    search_fields = ("id__exact", "user__username", "user__email")
    search_help_text = _("Run id, or the user's username or email.")
    list_select_related = ("user",)
    ordering = ("-created_at", "-id")
    actions = ("mark_stuck_failed", "force_fail_selected", "resume_selected")
    inlines = (RecoveryEventInline,)
    raw_id_fields = ("user",)
    # Only the run's user may be edited; everything else is the application's record.
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "user",
                    "status",
                    "progress",
                    "what_happens_next",
                    "attempts",
                    "deaths",
                    "worker",
                    "priority",
                )
            },
        ),
        (_("Slices"), {"fields": ("workers_on_it", "slice_table")}),
        (
            _("Timeline"),
            {
                "fields": (
                    "created_at",
                    "age",
                    "started_at",
                    "heartbeat",
                    "stuck",
                    "completed_at",
                )
            },
        ),
        (_("Failure"), {"fields": ("failure_reason",)}),
        (_("Input"), {"fields": ("criteria",)}),
    )
    readonly_fields = (
        "status",
        "progress",
        "what_happens_next",
        "attempts",
        "deaths",
        "worker",
        "priority",
        "workers_on_it",
        "slice_table",
        "created_at",
        "age",
        "started_at",
        "heartbeat",
        "stuck",
        "completed_at",
        "failure_reason",
        "criteria",
    )
    force_fail_confirmation_template = (
        "admin/recovery/qualificationrun/force_fail_confirmation.html"
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        """The recovery overview, before the change view's catch-all `<path:object_id>/`."""
        overview = path(
            "overview/",
            self.admin_site.admin_view(self.overview_view),
            name="recovery_overview",
        )
        return [overview, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> TemplateResponse:
        """Workers, queue, runs by status and the last 7 days of recoveries, for whoever may
        see the runs (the admin's usual 403 otherwise)."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Recovery overview"),
            "subtitle": None,
            "opts": self.opts,
            **overview_page.context(overview.build(), request, self.admin_site),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/recovery/overview.html", context)

    def get_queryset(self, request: HttpRequest) -> Any:
        """Each run says whether it is dead right now, in the page's one query."""
        return (
            super()
            .get_queryset(request)
            .annotate(
                is_dead=Exists(stuck_runs().filter(Q(pk=OuterRef("pk")) | Q(parent=OuterRef("pk"))))
            )
        )

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        """The run with what its outlook reads (the changelist does without: it shows none)."""
        run = super().get_object(request, object_id, from_field)
        if run is None:
            return None
        return outlook.annotate(self.get_queryset(request)).filter(pk=run.pk).first()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No Delete button on a run that has recovery events: they PROTECT it, so deleting
        it could only fail."""
        if obj is not None and obj.recovery_events.exists():
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Writes only the edited fields: a full save() would put the status and progress read
        when the form was submitted back over whatever the worker or a sweep wrote since."""
        obj.save(update_fields=form.changed_data)  # adding is disabled: always a change

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """The Slices section only for a run worked as slices."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not obj.slice_count:
            return [fieldset for fieldset in fieldsets if fieldset[0] != _("Slices")]
        lease = {"attempts", "deaths", "worker", "priority"}  # each slice has its own
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f not in lease]})
            for name, options in fieldsets
        ]

    @admin.display(description=_("workers on it"))
    def workers_on_it(self, run: QualificationRun) -> int:
        return getattr(run, "workers_on_it", 0) or 0

    @admin.display(description=_("slices"))
    def slice_table(self, run: QualificationRun) -> str:
        """Each slice's lease: its prospects, state, worker, attempts and deaths."""
        rows = slices.slices_of(run).select_related("worker")
        body = format_html_join(
            "",
            "<tr><td>{}–{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{part.first_number:,}",
                    f"{part.last_number:,}",
                    part.get_status_display(),
                    part.progress,
                    part.worker or "—",
                    part.attempts,
                    part.deaths,
                )
                for part in rows
            ),
        )
        head = "".join(
            f"<th>{gettext(name)}</th>"
            for name in ("prospects", "status", "done", "worker", "attempts", "deaths")
        )
        return format_html(
            '<table class="slice-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
            mark_safe(head),  # noqa: S308 - fixed column names, translated
            body,
        )

    # --- columns -------------------------------------------------------------------------------

    @admin.display(description=_("progress"), ordering="completed")
    def progress(self, run: QualificationRun) -> str:
        return run.progress

    @admin.display(description=_("age"), ordering="-created_at")
    def age(self, run: QualificationRun) -> str:
        return time_ago(run.created_at)

    @admin.display(description=_("last heartbeat"), ordering="heartbeat_at", empty_value="—")
    def last_heartbeat(self, run: QualificationRun) -> str | None:
        if run.heartbeat_at is None:
            return None
        return format_html(
            '<span title="{}">{}</span>',
            run.heartbeat_at.isoformat(),
            gettext("%(time)s ago") % {"time": time_ago(run.heartbeat_at)},
        )

    @admin.display(description=_("last heartbeat"), empty_value="—")
    def heartbeat(self, run: QualificationRun) -> str | None:
        """The run page's one heartbeat line: the time, and how long ago."""
        if run.heartbeat_at is None:
            return None
        return gettext("%(time)s (%(ago)s ago)") % {
            "time": formats.localize(timezone.localtime(run.heartbeat_at)),
            "ago": time_ago(run.heartbeat_at),
        }

    @admin.display(description=_("what happens next"))
    def what_happens_next(self, run: QualificationRun) -> str:
        """What the system knows of the run and will do with it (`recovery.outlook`); a
        failed run's next step is said for the operator, who resumes it with an action."""
        seen = outlook.outlook_of(run)
        if seen.state == outlook.FAILED and seen.remaining:
            return gettext(
                "Its owner's Continue, or the action Resume selected runs, puts it back in the "
                "queue for the %(left)s prospects without a result; its %(kept)s results are kept."
            ) % {"left": f"{seen.remaining:,}", "kept": f"{run.completed:,}"}
        return seen.text

    @admin.display(description=_("stuck"))
    def stuck(self, run: QualificationRun) -> str:
        """Words, not icons: a green tick for "stuck" read as good news."""
        return gettext("Yes") if getattr(run, "is_dead", False) else gettext("No")

    # --- actions -------------------------------------------------------------------------------

    @admin.action(description=_("Mark selected stuck runs as failed"), permissions=["change"])
    def mark_stuck_failed(self, request: HttpRequest, queryset: Any) -> None:
        """Fails the selected runs that are stuck right now; live and finished ones are skipped
        with the reason, so an operator never fails a run that is still working."""
        selected = list(queryset.values_list("pk", flat=True))
        try:
            report = recover_stuck_runs(
                source=RecoverySource.ADMIN, actor=request.user, run_ids=selected
            )
        except RecoveryInputError as exc:
            self.message_user(request, gettext("Nothing changed: %s.") % exc, messages.ERROR)
            return
        self._report(
            request,
            report,
            done=ngettext(
                "Marked %(n)d stuck run as failed",
                "Marked %(n)d stuck runs as failed",
                report.recovered_count,
            ),
        )

    @admin.action(description=_("Force-fail selected active runs"), permissions=["change"])
    def force_fail_selected(self, request: HttpRequest, queryset: Any) -> TemplateResponse | None:
        """Fails the selected active runs whatever their heartbeat says, for runs an operator
        knows are dead; asks for confirmation first, like delete_selected."""
        runs = list(queryset.order_by("pk"))
        selected = [run.pk for run in runs]
        active = [run for run in runs if run.is_active]
        if request.POST.get("post") == "yes":
            if not active:
                self._report_all_finished(request, len(selected))
                return None
            try:
                report = recover_stuck_runs(
                    source=RecoverySource.ADMIN,
                    actor=request.user,
                    run_ids=selected,
                    force=True,
                )
            except RecoveryInputError as exc:
                self.message_user(request, gettext("Nothing changed: %s.") % exc, messages.ERROR)
                return None
            self._report(
                request,
                report,
                done=ngettext(
                    "Force-failed %(n)d run", "Force-failed %(n)d runs", report.recovered_count
                ),
            )
            return None
        if not active:
            self._report_all_finished(request, len(selected))
            return None
        return self._force_fail_confirmation(request, runs, active)

    @admin.action(description=_("Resume selected runs"), permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: Any) -> None:
        """Puts back in the queue the selected runs that are stuck right now and the failed
        ones with prospects left, through the same code as the resume policy and the owner's
        Continue; the message says what was resumed and why the others were skipped."""
        selected = list(queryset.values_list("pk", flat=True))
        continued = continue_failed_runs(selected, source=RecoverySource.ADMIN, actor=request.user)
        try:
            report = recover_stuck_runs(
                source=RecoverySource.ADMIN,
                actor=request.user,
                run_ids=selected,
                policy=POLICY_RESUME,
            )
        except RecoveryInputError as exc:
            report = None
            self.message_user(request, gettext("Stuck runs: %s.") % exc, messages.ERROR)
        swept = report.recovered if report else []
        # Counted as runs: a run worked as slices may have had several slices resumed.
        continued = list({run.run_id: run for run in continued}.values())
        resumed = list(
            {run.run_id: run for run in swept if run.new_status == RunStatus.PENDING}.values()
        )
        gave_up = list(
            {run.run_id: run for run in swept if run.new_status == RunStatus.FAILED}.values()
        )
        done = {run.run_id for run in [*continued, *swept]}
        parts = [
            ngettext("Resumed %(n)d run", "Resumed %(n)d runs", len(continued) + len(resumed))
            % {"n": len(continued) + len(resumed)}
            + " "
            + gettext("(%(stuck)d stuck, %(failed)d failed with prospects left)")
            % {"stuck": len(resumed), "failed": len(continued)}
        ]
        if gave_up:
            parts.append(
                ngettext(
                    "failed %(n)d stuck run whose worker died %(max)d times (crash-loop guard)",
                    "failed %(n)d stuck runs whose worker died %(max)d times (crash-loop guard)",
                    len(gave_up),
                )
                % {"n": len(gave_up), "max": conf.RECOVERY_MAX_ATTEMPTS}
            )
        skipped = [run_id for run_id in selected if run_id not in done]
        if skipped:
            parts.append(resume_skipped_summary(skipped))
        level = messages.WARNING if skipped or gave_up else messages.SUCCESS
        self.message_user(request, "; ".join(parts) + ".", level)

    def _force_fail_confirmation(
        self,
        request: HttpRequest,
        runs: list[QualificationRun],
        active: list[QualificationRun],
    ) -> TemplateResponse:
        finished = [run for run in runs if not run.is_active]
        now = timezone.now()
        dead = set(
            stuck_runs().filter(pk__in=[run.pk for run in active]).values_list("pk", flat=True)
        )
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Force-fail qualification runs"),
            "subtitle": None,
            "opts": self.opts,
            "runs": runs,
            "active_rows": [
                {
                    "run": run,
                    "last_seen": time_ago(run.last_seen, now),
                    "stuck": run.pk in dead,
                }
                for run in active[:CONFIRMATION_MAX_DISPLAY]
            ],
            "active_count": len(active),
            "active_hidden": max(len(active) - CONFIRMATION_MAX_DISPLAY, 0),
            "finished": finished[:CONFIRMATION_MAX_DISPLAY],
            "finished_count": len(finished),
            "finished_hidden": max(len(finished) - CONFIRMATION_MAX_DISPLAY, 0),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": "force_fail_selected",
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.force_fail_confirmation_template, context)

    def _report_all_finished(self, request: HttpRequest, count: int) -> None:
        self.message_user(
            request,
            ngettext(
                "Nothing to force-fail: the selected run has already finished.",
                "Nothing to force-fail: all %(n)d selected runs have already finished.",
                count,
            )
            % {"n": count},
            messages.WARNING,
        )

    def _report(self, request: HttpRequest, report: RecoveryReport, *, done: str) -> None:
        """One message: how many changed, how many were skipped and why."""
        text = done % {"n": report.recovered_count}
        if report.skipped:
            text += "; " + skipped_summary(report)
        level = messages.WARNING if report.skipped else messages.SUCCESS
        self.message_user(request, text + ".", level)


def skipped_summary(report: RecoveryReport) -> str:
    """Why runs were skipped, e.g. "2 skipped: 1 still alive (...), 1 already finished", from
    the reasons the sweep decided when it looked at them."""
    counts = Counter(report.skipped.values())
    reasons = []
    if alive := counts[SkipReason.ALIVE]:
        reasons.append(
            gettext("%(n)d still alive (its worker beats or it made progress lately)")
            % {"n": alive}
        )
    if waiting := counts[SkipReason.WAITING]:
        reasons.append(
            gettext("%(n)d waiting in the queue with a live task%(none)s")
            % {
                "n": waiting,
                "none": "" if liveness.any_worker_alive() else gettext(" (no worker is running)"),
            }
        )
    if finished := counts[SkipReason.FINISHED]:
        reasons.append(gettext("%(n)d already finished") % {"n": finished})
    if busy := counts[SkipReason.LOCKED]:
        # Dead, but the sweep skips a row that another transaction holds locked (a heartbeat
        # being written, another sweep) rather than wait for it.
        reasons.append(gettext("%(n)d busy with a concurrent update, try again") % {"n": busy})
    return gettext("%(n)d skipped: %(reasons)s") % {
        "n": len(report.skipped),
        "reasons": ", ".join(reasons),
    }


def resume_skipped_summary(skipped: list[int]) -> str:
    """Why selected runs were not resumed, from their state now (one query)."""
    states = liveness.run_states(skipped)
    completed = nothing_left = alive = waiting = busy = 0
    for state in states.values():
        if state.status == RunStatus.COMPLETED:
            completed += 1
        elif state.status == RunStatus.FAILED:
            nothing_left += 1  # a failed run with prospects left would have been continued
        elif state.liveness == liveness.DEAD:
            busy += 1  # eligible, but another transaction held it locked
        elif state.liveness == liveness.WAITING:
            waiting += 1
        else:
            alive += 1
    reasons = []
    if alive:
        reasons.append(
            gettext("%(n)d still alive (its worker beats or it made progress lately)")
            % {"n": alive}
        )
    if waiting:
        reasons.append(gettext("%(n)d waiting in the queue with a live task") % {"n": waiting})
    if completed:
        reasons.append(gettext("%(n)d already completed") % {"n": completed})
    if nothing_left:
        reasons.append(gettext("%(n)d failed with no prospect left") % {"n": nothing_left})
    if busy:
        reasons.append(gettext("%(n)d busy with a concurrent update, try again") % {"n": busy})
    return gettext("%(n)d skipped: %(reasons)s") % {
        "n": len(skipped),
        "reasons": ", ".join(reasons),
    }


# --- workers ----------------------------------------------------------------------------------


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """The registered worker processes, read-only: the sweep removes dead ones."""

    list_display = ("id", "host", "pid", "registered_at", "last_beat", "current_run", "alive")
    list_filter = ("host",)
    ordering = ("host", "pid")
    readonly_fields = (
        "host",
        "pid",
        "process_started_at",
        "executor_pid",
        "registered_at",
        "last_beat_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        """Alive or not on the database's clock, and the run in progress, in one query."""
        return liveness.annotate_workers(super().get_queryset(request))

    @admin.display(description=_("last beat"), ordering="last_beat_at")
    def last_beat(self, worker: Worker) -> str:
        return gettext("%(time)s ago") % {"time": time_ago(worker.last_beat_at)}

    @admin.display(description=_("current run"), empty_value="—")
    def current_run(self, worker: Worker) -> str | None:
        run_id = getattr(worker, "current_run_id", None)
        if run_id is None:
            return None
        url = reverse("admin:recovery_qualificationrun_change", args=[run_id])
        name = gettext("Run %(id)s") % {"id": run_id}
        first = getattr(worker, "current_first_number", None)
        if first is not None:
            name += " " + gettext("(slice of prospects %(first)s–%(last)s)") % {
                "first": f"{first:,}",
                "last": f"{worker.current_last_number:,}",
            }
        return format_html('<a href="{}">{}</a>', url, name)

    @admin.display(description=_("alive"))
    def alive(self, worker: Worker) -> str:
        return gettext("alive") if getattr(worker, "is_alive", False) else gettext("not responding")


# The admin's index links to the recovery overview, unless the project chose its own index.
if admin.site.index_template is None:
    admin.site.index_template = "admin/recovery/index.html"
