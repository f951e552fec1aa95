"""``manage.py purge_sessions [--days N] [--dry-run]``: delete session results older than the retention period."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sessions_app.services.retention import sessions_purge


class Command(BaseCommand):
    """Retention purge from the command line or a scheduler (the same work as the Celery beat task).

    Options: ``--days N`` (retention in days; default ``FER_RETENTION_DAYS``; 0 keeps everything) and
    ``--dry-run`` (count only). Prints one line with the numbers of sessions, frames, faces and timeline buckets
    purged (or purgeable).
    """

    help = "Delete the frames, faces and timelines of sessions that ended more than FER_RETENTION_DAYS days ago."

    def add_arguments(self, parser) -> None:
        """Declare ``--days`` (int, days) and ``--dry-run`` (flag) on ``parser`` (an ``argparse`` parser)."""
        parser.add_argument(
            "--days", type=int, default=None, help="Retention in days (default: FER_RETENTION_DAYS; 0 keeps all)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args, days: int | None = None, dry_run: bool = False, **options) -> None:
        """Purge sessions that ended more than ``days`` days ago (``None``: the setting) and report the counts.

        Raises:
            CommandError: ``days`` is negative.
        """
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
