"""``manage.py serve [daphne options]``: the web process, daphne with the limits of settings
(``fer_platform.serve``)."""

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Serve HTTP and WebSockets with daphne, limits from settings (e.g. serve -b 0.0.0.0 -p 8000 --proxy-headers)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("daphne_args", nargs="*", help="passed to daphne, e.g. -b 0.0.0.0 -p 8000 --proxy-headers")

    def handle(self, *args, **options) -> None:
        from fer_platform.serve import serve

        serve(list(options["daphne_args"]))
