"""Queue every member who is a viewer somewhere for publication again.

Since this version the users table names only members who may open Studio (viewers only with
STUDIO_ALLOW_VIEWERS): items published for viewers before must be rewritten or deleted, which the
outbox's drain (beat, every 30 s) does from these rows.
"""

from django.conf import settings
from django.db import migrations


def republish_viewers(apps, schema_editor):
    if not settings.DYNAMODB_PUBLICATION_ENABLED:
        return  # nothing is published; `dynamodb_sync --apply` catches up when it is turned on
    Membership = apps.get_model("accounts", "Membership")
    MappingOutbox = apps.get_model("accounts", "MappingOutbox")
    usernames = (
        Membership.objects.filter(role="viewer")
        .values_list("user__username", flat=True)
        .distinct()
        .order_by("user__username")
    )
    MappingOutbox.objects.bulk_create(
        [MappingOutbox(kind="user", key=username) for username in usernames]
    )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_studio_domain_and_profile")]

    operations = [migrations.RunPython(republish_viewers, migrations.RunPython.noop)]
