"""Invocation.job: the job whose chunk a call ran (its answer is in the job's part)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0003_invocation_result_stored_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="invocation",
            name="job",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="subscriptions.job",
            ),
        ),
    ]
