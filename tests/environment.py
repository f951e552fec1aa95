"""Pytest plugin loaded before Django settings (``-p tests.environment`` in pyproject's addopts).

Tests run with ``DJANGO_DEBUG`` off, as production does, so settings demand a real secret key: this one exists
only for the test run (also in the worker and daphne subprocesses the tests start, which inherit it).
"""

import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-" + secrets.token_urlsafe(32))
