"""Prospect.number: each prospect's place in its run, from 1 (the rank of its position)."""

from django.db import migrations, models

BATCH_SIZE = 1_000


def number_prospects(apps, schema_editor):
    Prospect = apps.get_model("qualifier", "Prospect")
    run_ids = Prospect.objects.order_by().values_list("run_id", flat=True).distinct()
    for run_id in run_ids.iterator():
        ids = (
            Prospect.objects.filter(run_id=run_id).order_by("position").values_list("pk", flat=True)
        )
        Prospect.objects.bulk_update(
            [Prospect(pk=pk, number=number) for number, pk in enumerate(ids, start=1)],
            ["number"],
            batch_size=BATCH_SIZE,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("qualifier", "0005_run_input_delimiter"),
    ]

    operations = [
        migrations.AddField(
            model_name="prospect",
            name="number",
            field=models.PositiveIntegerField(null=True, verbose_name="number"),
        ),
        migrations.RunPython(number_prospects, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="prospect",
            name="number",
            field=models.PositiveIntegerField(verbose_name="number"),
        ),
        migrations.AddConstraint(
            model_name="prospect",
            constraint=models.UniqueConstraint(
                fields=("run", "number"), name="prospect_unique_number"
            ),
        ),
    ]
