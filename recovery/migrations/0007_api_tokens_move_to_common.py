# ApiToken moved to the common app. Its table stays: common's 0001 takes the model over and
# renames the table, so tokens issued before the move keep working.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0006_fenced_writes_and_sweep_tallies"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")],
            database_operations=[],
        ),
    ]
