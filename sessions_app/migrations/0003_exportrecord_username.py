"""ExportRecord.username: a copy of the exporting user's name, kept when the user is deleted (audit log)."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def copy_usernames(apps, schema_editor):
    """Fill ``username`` of existing entries from their user (entries whose user is already gone stay blank)."""
    ExportRecord = apps.get_model("sessions_app", "ExportRecord")
    User = ExportRecord._meta.get_field("user").related_model  # the historical user model
    ExportRecord.objects.filter(user__isnull=False).update(
        username=Subquery(User.objects.filter(pk=OuterRef("user_id")).values("username")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0002_session_uploads_count"),
    ]

    operations = [
        migrations.AddField(
            model_name="exportrecord",
            name="username",
            field=models.CharField(
                blank=True,
                default="",
                help_text="Username at export time, kept after the user is deleted.",
                max_length=150,
            ),
        ),
        migrations.RunPython(copy_usernames, migrations.RunPython.noop),
    ]
