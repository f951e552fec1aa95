"""Uploads (``services.uploads``): the per-user hourly quota of upload frames, on the real cache (Redis)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from sessions_app.models import EmotionSession
from sessions_app.services.uploads import UploadRejected, upload_process
from tests.helpers import idle_celery_queue

pytestmark = pytest.mark.django_db


def _forget_quotas(*users) -> None:
    """Counts of earlier test runs (user ids repeat in a new test database) must not count against this one."""
    import time

    from django.core.cache import cache

    hour = int(time.time() // 3600)
    cache.delete_many([f"fer:upload-quota:{u.pk}:{h}" for u in users for h in (hour, hour + 1)])


def _photo(group_photo) -> SimpleUploadedFile:
    path, _ = group_photo
    return SimpleUploadedFile(path.name, path.read_bytes(), "image/jpeg")


def test_a_user_over_the_hourly_upload_quota_is_refused_and_nothing_is_queued(
    teacher, other_teacher, make_session, group_photo, settings, idle_upload_queue
):
    settings.FER_UPLOAD_FRAMES_PER_HOUR = 2
    _forget_quotas(teacher, other_teacher)
    mine, theirs = make_session(teacher), make_session(other_teacher)
    for _ in range(2):
        assert upload_process(session=mine, uploaded_file=_photo(group_photo))["frames"] == 1
    with pytest.raises(UploadRejected, match="upload quota reached: 2 frames per hour per user, 0 left"):
        upload_process(session=mine, uploaded_file=_photo(group_photo))
    mine = EmotionSession.objects.get(pk=mine.pk)
    assert (mine.frames_received, mine.uploads_count) == (2, 2)  # the refused upload left no trace
    assert idle_upload_queue() == 2
    # the quota is per user: another teacher uploads as usual
    assert upload_process(session=theirs, uploaded_file=_photo(group_photo))["frames"] == 1


def test_the_quota_can_be_switched_off(teacher, make_session, group_photo, settings, idle_upload_queue):
    settings.FER_UPLOAD_FRAMES_PER_HOUR = 0
    s = make_session(teacher)
    for _ in range(3):
        upload_process(session=s, uploaded_file=_photo(group_photo))
    assert idle_upload_queue() == 3


@pytest.fixture
def idle_upload_queue(settings):
    """Upload frames go to a queue of this test that no worker consumes; yields a function giving its length."""
    with idle_celery_queue(settings, "FER_UPLOAD_QUEUE") as length:
        yield length
