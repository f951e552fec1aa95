"""Data migrations of ``sessions_app``."""

from __future__ import annotations

import pytest

from sessions_app.models import ExportRecord

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]


def test_migration_copies_usernames_of_existing_entries(fixture_session, teacher_a):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("sessions_app.migrations.0003_exportrecord_username")
    old = ExportRecord.objects.create(user=teacher_a, session=fixture_session, session_label="x", format="csv")
    orphan = ExportRecord.objects.create(user=None, session=fixture_session, session_label="y", format="json")
    assert old.username == "" and orphan.username == ""
    migration.copy_usernames(apps, None)
    old.refresh_from_db()
    orphan.refresh_from_db()
    assert (old.username, orphan.username) == ("teacher_a", "")
