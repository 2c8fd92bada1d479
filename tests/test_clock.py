"""The database's clock: ages are whole seconds, never negative, and NULL stays NULL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import DateTimeField, Value
from django.utils import timezone

from recovery.clock import SecondsSince
from recovery.models import QualificationRun


@pytest.mark.django_db
def test_an_age_is_whole_seconds_never_negative_and_null_for_null(make_run):
    run = make_run()
    now = timezone.now()

    def age(when: dt.datetime | None) -> int | None:
        stamp = Value(when, output_field=DateTimeField())
        return (
            QualificationRun.objects.filter(pk=run.pk)
            .annotate(age=SecondsSince(stamp))
            .values_list("age", flat=True)
            .get()
        )

    assert 89 <= age(now - dt.timedelta(seconds=90)) <= 91
    # A later time than the statement's (a write that committed as this statement began).
    assert age(now + dt.timedelta(seconds=30)) == 0
    assert age(None) is None
