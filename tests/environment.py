"""Pytest plugin loaded before Django settings (``-p tests.environment`` in pyproject's addopts).

Tests run with ``DJANGO_DEBUG`` off, as production does, so settings demand a real secret key: this one exists
only for the test run (also in the worker and daphne subprocesses the tests start, which inherit it). The same
goes for the Celery queue names.
"""

import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-" + secrets.token_urlsafe(32))

#: This run's Celery queues (frames of other runs or a dev server never mix in); test workers consume both.
TEST_QUEUE = f"fer-test-{secrets.token_hex(4)}"
os.environ["FER_LIVE_QUEUE"] = f"{TEST_QUEUE}.1.live"
os.environ["FER_UPLOAD_QUEUE"] = f"{TEST_QUEUE}.2.uploads"
