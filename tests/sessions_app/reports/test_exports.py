"""Exports (``sessions_app.reports.exports``): CSV/JSON contents against the stored rows, CSV parse-back, audit log,
constant memory on 100k faces."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gc
import io
import json
import tracemalloc

import psutil
import pytest

from sessions_app.models import PROBABILITY_FIELDS, ExportRecord, Face
from sessions_app.reports import exports
from tests.helpers import FRAMES, PROBS, big_session_create, session_with_frames

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]


def _download(client, session, fmt: str) -> tuple[object, bytes]:
    response = client.get(f"/api/v1/sessions/{session.pk}/export/", {"format": fmt})
    assert response.status_code == 200
    assert response.streaming
    return response, b"".join(response.streaming_content)


def test_csv_export_parses_back_to_the_stored_rows(clients, fixture_session):
    response, body = _download(clients["teacher_a"], fixture_session, "csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="session-{fixture_session.pk}-fixture-class.csv"'
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert tuple(rows[0].keys()) == exports.CSV_COLUMNS
    # 24 face rows + 1 row for the frame without faces, in session-time order
    assert len(rows) == 25
    faces = list(Face.objects.filter(session=fixture_session).select_related("frame").order_by("frame__offset_s", "id"))
    face_rows = [r for r in rows if r["face_id"]]
    assert len(face_rows) == len(faces) == 24
    for row, face in zip(face_rows, faces, strict=True):
        frame = face.frame
        assert int(row["session_id"]) == fixture_session.pk
        assert int(row["frame_id"]) == frame.pk and int(row["face_id"]) == face.pk
        assert (row["source"], int(row["sequence"])) == (frame.source, frame.sequence)
        assert dt.datetime.fromisoformat(row["captured_at"]) == frame.captured_at
        assert float(row["offset_s"]) == frame.offset_s
        assert float(row["processing_ms"]) == frame.processing_ms
        assert (int(row["width"]), int(row["height"]), int(row["face_count"])) == (640, 480, frame.face_count)
        assert tuple(int(row[k]) for k in "xywh") == face.box
        assert (row["label"], float(row["score"])) == (face.label, face.score)
        assert [float(row[f]) for f in PROBABILITY_FIELDS] == face.probabilities  # exact round trip
    # the hand-written fixture: offsets, faces per frame, and the probabilities of each face's code
    offsets = [float(r["offset_s"]) for r in rows]
    assert offsets == [o for o, codes in FRAMES for _ in range(max(len(codes), 1))]
    codes = "".join(c for _, c in FRAMES)
    assert [tuple(float(r[f]) for f in PROBABILITY_FIELDS) for r in face_rows] == [PROBS[c] for c in codes]
    empty = rows[-1]
    assert float(empty["offset_s"]) == 24.0 and empty["face_count"] == "0"
    assert all(empty[c] == "" for c in exports.FACE_COLUMNS)


def test_postgresql_and_python_csv_are_identical(fixture_session, teacher_a):
    """The database-formatted CSV (PostgreSQL) and the Python-formatted one agree byte for byte, also for a source
    name that needs CSV quoting and for awkward floats."""
    from sessions_app.services.frames import frame_result_store

    session = session_with_frames(teacher_a, name="Quoting", frames=[(1.25, "NHS"), (2.0, "")])
    frame_result_store(
        session=session,
        source='upload:1,"x"',
        sequence=0,
        captured_at=session.created_at + dt.timedelta(seconds=3.000123),
        width=7,
        height=9,
        processing_ms=1 / 3,
        faces=[
            {
                "box": (1, 2, 3, 4),
                "label": "fear",
                "score": 1e-5,
                "probabilities": [1e-5, 2 / 3, 0, 0, 0, 0, 0.1],
                "head_pose": {"yaw": -27.8, "pitch": 1 / 3, "roll": 0.0},
            }
        ],
        publish=False,
    )
    base = session.created_at.replace(microsecond=0)
    for sequence, microsecond in enumerate((0, 274780, 100000), start=100):  # trailing zeros: both must keep all six
        frame_result_store(
            session=session,
            source="camera",
            sequence=sequence,
            captured_at=base + dt.timedelta(seconds=sequence - 95, microseconds=microsecond),
            width=7,
            height=9,
            processing_ms=1.0,
            faces=[],
            publish=False,
        )
    for s in (fixture_session, session):
        python = b"".join(exports.csv_chunks_python(session=s, rows_per_piece=3))
        postgres = b"".join(exports.csv_chunks_postgresql(session=s, rows_per_piece=3))
        assert postgres == python
    rows = list(csv.DictReader(io.StringIO(python.decode())))
    assert [r["captured_at"][19:] for r in rows[-3:]] == [".000000+00:00", ".274780+00:00", ".100000+00:00"]
    unposed = [r for r in rows if r["face_id"] and not r["source"].startswith("upload")]
    assert len(unposed) == 3 and all(r["yaw"] == r["pitch"] == r["roll"] == "" for r in unposed)  # empty, not 0
    rows = [r for r in rows if r["source"] != "camera"]
    assert rows[-1]["source"] == 'upload:1,"x"'
    assert float(rows[-1]["processing_ms"]) == 1 / 3 and float(rows[-1]["p_disgust"]) == 2 / 3
    assert (rows[-1]["yaw"], float(rows[-1]["pitch"]), rows[-1]["roll"]) == ("-27.8", 1 / 3, "0")


def test_json_export_matches_the_stored_rows(clients, fixture_session):
    response, body = _download(clients["admin"], fixture_session, "json")
    assert response["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["session"]["id"] == fixture_session.pk and doc["session"]["name"] == "Fixture class"
    assert doc["session"]["ended_at"] is not None
    assert "offset_s" in doc["units"]
    assert [f["offset_s"] for f in doc["frames"]] == [o for o, _ in FRAMES]
    assert [len(f["faces"]) for f in doc["frames"]] == [len(c) for _, c in FRAMES]
    assert [f["face_count"] for f in doc["frames"]] == [len(c) for _, c in FRAMES]
    stored = {f.pk: f for f in Face.objects.filter(session=fixture_session)}
    for frame in doc["frames"]:
        for face in frame["faces"]:
            db = stored.pop(face["face_id"])
            assert db.frame_id == frame["frame_id"]
            assert (face["x"], face["y"], face["w"], face["h"]) == db.box
            assert [face[f] for f in PROBABILITY_FIELDS] == db.probabilities
            assert (face["label"], face["score"]) == (db.label, db.score)
    assert stored == {}


def test_exports_of_an_empty_session_have_no_rows(clients, teacher_a):
    session = session_with_frames(teacher_a, name="Empty", frames=[])
    _, body = _download(clients["teacher_a"], session, "json")
    assert json.loads(body)["frames"] == []
    _, body = _download(clients["teacher_a"], session, "csv")
    assert body.decode().splitlines() == [",".join(exports.CSV_COLUMNS)]


def test_exports_are_audited(clients, fixture_session, teacher_a, admin_user):
    _download(clients["teacher_a"], fixture_session, "csv")
    _download(clients["admin"], fixture_session, "json")
    clients["teacher_b"].get(f"/api/v1/sessions/{fixture_session.pk}/export/", {"format": "csv"})  # 404: no record
    clients["teacher_a"].get(f"/api/v1/sessions/{fixture_session.pk}/export/", {"format": "xls"})  # 400: no record
    records = list(ExportRecord.objects.order_by("created_at", "id"))
    assert [(r.user, r.session_id, r.format) for r in records] == [
        (teacher_a, fixture_session.pk, "csv"),
        (admin_user, fixture_session.pk, "json"),
    ]
    assert records[0].session_label == f"Fixture class (#{fixture_session.pk})"
    assert [r.username for r in records] == ["teacher_a", "admin"]


def test_audit_log_keeps_the_username_after_the_user_is_deleted(clients, fixture_session, teacher_b, admin_user):
    session_b = session_with_frames(teacher_b, name="B's lesson", frames=[])
    _download(clients["teacher_b"], session_b, "csv")
    teacher_b.delete()  # deletes B's sessions too: both user and session of the entry become NULL
    record = ExportRecord.objects.get()
    assert (record.user, record.session, record.username, record.format) == (None, None, "teacher_b", "csv")
    assert record.session_label == f"B's lesson (#{session_b.pk})"
    page = clients["admin"].get("/admin/sessions_app/exportrecord/")
    assert page.status_code == 200
    row = page.content.decode().split('class="field-username"')[1].split("</td>")[0]
    assert "teacher_b" in row
    assert "teacher_b" in clients["admin"].get("/admin/sessions_app/exportrecord/", {"q": "teacher_b"}).content.decode()


@pytest.fixture
def big_session(teacher_a):
    session = big_session_create(teacher_a, frames=10_000, faces_per_frame=10)
    assert Face.objects.filter(session=session).count() == 100_000
    return session


@pytest.mark.slow
def test_large_csv_export_streams_in_constant_memory(clients, big_session):
    """100k face rows: the CSV is ~25 MB, yet Python's peak allocation (tracemalloc) while streaming stays ~3 MB."""
    response = clients["teacher_a"].get(f"/api/v1/sessions/{big_session.pk}/export/", {"format": "csv"})
    assert response.status_code == 200 and response.streaming
    total = pieces = lines = 0
    tracemalloc.start()
    try:
        for piece in response.streaming_content:  # the query runs lazily, inside the traced window
            total += len(piece)
            pieces += 1
            lines += piece.count(b"\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == 100_001  # header + one line per face: the whole session was exported ...
    assert total > 20_000_000 and pieces > 100  # ... in many pieces, not one body
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB for a {total / 1e6:.1f} MB export"


@pytest.mark.slow
def test_large_json_export_streams_in_constant_memory(clients, big_session):
    """The same session as JSON (~34 MB): resident memory grows by far less than the document (tracemalloc would
    make this loop several times slower; a materialized document with its dicts would add well over 100 MB)."""
    process = psutil.Process()
    response = clients["teacher_a"].get(f"/api/v1/sessions/{big_session.pk}/export/", {"format": "json"})
    assert response.status_code == 200 and response.streaming
    gc.collect()
    baseline = peak = process.memory_info().rss
    total = pieces = 0
    tail = b""
    for piece in response.streaming_content:
        total += len(piece)
        pieces += 1
        tail = piece[-2:]
        if pieces % 10 == 0:
            peak = max(peak, process.memory_info().rss)
    peak = max(peak, process.memory_info().rss)
    assert total > 30_000_000 and pieces > 50 and tail == b"]}"
    assert peak - baseline < 25_000_000, f"RSS grew by {(peak - baseline) / 1e6:.1f} MB for {total / 1e6:.1f} MB"


def test_async_iterator_yields_every_piece_in_order():
    """The ASGI path: a synchronous generator served through ``as_async_iterator`` loses nothing."""

    def pieces():
        for i in range(50):
            yield f"{i},".encode()

    async def collect():
        return [p async for p in exports.as_async_iterator(pieces(), pieces_per_hop=8)]

    assert b"".join(asyncio.run(collect())) == b"".join(pieces())


def test_export_chunks_rejects_unknown_format(fixture_session):
    with pytest.raises(ValueError):
        exports.export_chunks(session=fixture_session, fmt="xml")
