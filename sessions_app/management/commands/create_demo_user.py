"""``manage.py create_demo_user``: create (or reset) the quick-start demo teacher and print its credentials."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    """Create the demo teacher (not staff) or reset its password, and optionally a staff admin, printing the
    credentials. Idempotent: ``make run`` calls it at every start."""

    help = "Create or reset a demo teacher account (not staff) and print its credentials."

    def add_arguments(self, parser) -> None:
        """``--username``/``--password`` of the teacher (defaults ``teacher`` / ``teacher-demo-pass``);
        ``--admin-username`` (empty: no admin) and ``--admin-password`` of an optional staff superuser."""
        parser.add_argument("--username", default="teacher")
        parser.add_argument("--password", default="teacher-demo-pass")
        parser.add_argument("--admin-username", default="", help="Also create/reset a staff admin with this name.")
        parser.add_argument("--admin-password", default="admin-demo-pass")

    def handle(self, *args, **opts) -> None:
        """Create or reset the account(s) from the parsed options ``opts`` and print one line per account."""
        User = get_user_model()
        user, created = User.objects.get_or_create(username=opts["username"])
        user.set_password(opts["password"])
        user.is_active = True
        user.save()
        verb = "created" if created else "reset"
        self.stdout.write(f"Demo teacher {verb}: username={opts['username']} password={opts['password']}")
        if opts["admin_username"]:
            admin, _ = User.objects.get_or_create(username=opts["admin_username"])
            admin.set_password(opts["admin_password"])
            admin.is_staff = admin.is_superuser = admin.is_active = True
            admin.save()
            self.stdout.write(f"Demo admin: username={opts['admin_username']} password={opts['admin_password']}")
