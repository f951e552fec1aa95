"""``manage.py purge_sessions [--days N] [--dry-run]``: delete session results older than the retention period."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sessions_app.maintenance import sessions_purge


class Command(BaseCommand):
    help = "Delete the frames, faces and timelines of sessions that ended more than FER_RETENTION_DAYS days ago."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=None, help="Retention in days (default: FER_RETENTION_DAYS; 0 keeps all)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args, days=None, dry_run=False, **options):
        if days is not None and days < 0:
            raise CommandError("--days must be >= 0")
        effective = settings.FER_RETENTION_DAYS if days is None else days
        if effective <= 0:
            self.stdout.write("Retention is off (0 days): nothing purged.")
            return
        result = sessions_purge(days=effective, dry_run=dry_run)
        verb = "Would purge" if dry_run else "Purged"
        self.stdout.write(
            f"{verb} {result.sessions} sessions ({result.frames} frames, {result.faces} faces, "
            f"{result.buckets} timeline buckets) that ended before {result.cutoff.isoformat()}."
        )
