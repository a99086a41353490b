"""Invocation.result_stored_at: when the answer was in S3 (it may now be written after answering)."""

from django.db import migrations, models
from django.db.models import F


def stored_before_answering(apps, schema_editor):
    """Until now every answer with a result_uri was written before the call was answered."""
    invocation = apps.get_model("subscriptions", "Invocation")
    invocation.objects.exclude(result_uri="").update(result_stored_at=F("started_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0002_jobs"),
    ]

    operations = [
        migrations.AddField(
            model_name="invocation",
            name="result_stored_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the answer was in S3 at result_uri; empty while it is being "
                "written (INVOKE_RESULT_WRITE=after_answer) or if the process writing it stopped.",
                null=True,
            ),
        ),
        migrations.RunPython(stored_before_answering, migrations.RunPython.noop),
    ]
