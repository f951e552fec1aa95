"""The suite's own premise: it runs on PostgreSQL, like production (``eval "$(scripts/services.sh)"``)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_the_suite_runs_on_postgresql():
    assert connection.vendor == "postgresql"
