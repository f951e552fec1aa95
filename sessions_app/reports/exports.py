"""Streaming exports of a session's frame and face results, and the export audit log (issue #4).

An export is one row per face, joined with its frame; a frame without faces gives one row with empty face columns.
Rows are read with one ``LEFT JOIN`` query consumed through ``QuerySet.iterator(chunk_size=...)`` (a server-side
cursor on PostgreSQL) and encoded piece by piece, so a long session exports in constant memory. Under ASGI the
generators are wrapped in an async iterator (``as_async_iterator``) because Django would otherwise collect a
synchronous streaming body into a list before sending it.

Units: ``offset_s`` seconds since the session was created; ``processing_ms`` milliseconds; ``x, y, w, h, width,
height`` pixels of the analysed frame; ``score`` and ``p_*`` probabilities in [0, 1]; ``yaw, pitch, roll`` degrees
(``inference.pose``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable, Iterator

from asgiref.sync import sync_to_async
from django.db import connections
from django.utils.text import slugify

from sessions_app.models import PROBABILITY_FIELDS, SMOOTHED_FIELDS, EmotionSession, Face, Frame

#: Export formats of the REST API.
FORMATS: tuple[str, ...] = ("csv", "json")
#: Rows fetched per database round trip.
CHUNK_SIZE = 2000
#: Encoded rows grouped into one chunk of the HTTP body.
ROWS_PER_PIECE = 500
#: Frames (with their faces) grouped into one chunk of a JSON body.
FRAMES_PER_PIECE = 100

FRAME_COLUMNS: tuple[str, ...] = (
    "frame_id",
    "source",
    "sequence",
    "captured_at",
    "offset_s",
    "processing_ms",
    "width",
    "height",
    "face_count",
)
FACE_COLUMNS: tuple[str, ...] = (
    "face_id", "x", "y", "w", "h", "too_small", "label", "score", *PROBABILITY_FIELDS,
    "track", "smoothed_label", *SMOOTHED_FIELDS, "yaw", "pitch", "roll",
)  # fmt: skip
#: CSV header, in column order.
CSV_COLUMNS: tuple[str, ...] = ("session_id", *FRAME_COLUMNS, *FACE_COLUMNS)

_QUERY_FIELDS = (
    "id",
    "source",
    "sequence",
    "captured_at",
    "offset_s",
    "processing_ms",
    "width",
    "height",
    "face_count",
    "faces__id",
    "faces__x",
    "faces__y",
    "faces__w",
    "faces__h",
    "faces__too_small",
    "faces__label",
    "faces__score",
    *(f"faces__{f}" for f in PROBABILITY_FIELDS),
    "faces__track",
    "faces__smoothed_label",
    *(f"faces__{f}" for f in SMOOTHED_FIELDS),
    "faces__yaw",
    "faces__pitch",
    "faces__roll",
)


def export_rows(*, session: EmotionSession, chunk_size: int = CHUNK_SIZE) -> Iterator[tuple]:
    """Yield ``(frame values..., face values...)`` tuples in ``FRAME_COLUMNS + FACE_COLUMNS`` order, frames by
    session time, faces by id; the face values are ``None`` for a frame without faces. Constant memory."""
    qs = (
        Frame.objects.filter(session=session)
        .order_by("offset_s", "id", "faces__id")
        .values_list(*_QUERY_FIELDS)
        .iterator(chunk_size=chunk_size)
    )
    yield from qs


def _csv_text(value: str) -> str:
    """One CSV field (RFC 4180): quoted when it holds a comma, quote or line break."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _num(value) -> str:
    """A number as CSV text, like PostgreSQL prints it: shortest round-trip digits, integral floats without
    ``.0`` (``5.0`` -> ``"5"``, ``0.1`` -> ``"0.1"``, ``1e-05`` -> ``"1e-05"``)."""
    if type(value) is float:
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if type(value) is bool:
        return "true" if value else "false"  # as PostgreSQL prints a boolean
    if value is None:
        return ""  # an untracked face's track and smoothed values
    return str(value)


def csv_chunks(*, session: EmotionSession, rows_per_piece: int = ROWS_PER_PIECE) -> Iterator[bytes]:
    """CSV body (RFC 4180: UTF-8, header line first, ``\\r\\n`` line ends) of the session's export, in pieces.

    Timestamps are ISO 8601 with offset; floats use the shortest round-trip representation, so parsing a value
    back gives exactly the stored float. On PostgreSQL the lines are formatted by the database
    (``csv_chunks_postgresql``, several times faster); elsewhere in Python (``csv_chunks_python``). Both give the
    same bytes (for values below 1e15, i.e. every stored seconds, milliseconds, pixels and probabilities).
    """
    if connections[Frame.objects.db].vendor == "postgresql":
        return csv_chunks_postgresql(session=session, rows_per_piece=rows_per_piece)
    return csv_chunks_python(session=session, rows_per_piece=rows_per_piece)


def csv_chunks_python(*, session: EmotionSession, rows_per_piece: int = ROWS_PER_PIECE) -> Iterator[bytes]:
    """``csv_chunks`` formatted in Python from ``export_rows`` (any database). Lines are built directly, the frame
    part once per frame, rather than through ``csv.writer``: this is the hot loop of large exports."""
    empty_face = "," * (len(FACE_COLUMNS) - 1)
    n_frame = len(FRAME_COLUMNS)
    session_id = str(session.pk)
    parts: list[str] = [",".join(CSV_COLUMNS) + "\r\n"]
    last_frame_id = None
    prefix = ""
    for row in export_rows(session=session):
        if row[0] != last_frame_id:
            last_frame_id = row[0]
            frame_id, source, sequence, captured_at, *numbers = row[:n_frame]
            prefix = ",".join(
                [
                    session_id,
                    str(frame_id),
                    _csv_text(source),
                    str(sequence),
                    _iso_utc(captured_at),
                    *map(_num, numbers),
                ]
            )
        face = row[n_frame:]
        parts.append(f"{prefix},{empty_face if face[0] is None else ','.join(map(_num, face))}\r\n")
        if len(parts) >= rows_per_piece:
            yield "".join(parts).encode()
            parts = []
    yield "".join(parts).encode()


def _iso_utc(moment: dt.datetime) -> str:
    """ISO 8601 text of an aware datetime in UTC with exactly six fractional digits, e.g.
    ``2026-11-22T05:26:38.274780+00:00``: the same text PostgreSQL's ``to_char(... 'US')`` gives, whatever the
    microseconds (Python's default ``isoformat`` drops them when zero, PostgreSQL's ``to_json`` trims zeros)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _csv_line_sql() -> str:
    """SQL expression of one CSV line per (frame, face) row of ``f`` LEFT JOIN ``fa``; same text as Python's."""
    source = "CASE WHEN f.source ~ '[,\"\\r\\n]' THEN '\"' || replace(f.source, '\"', '\"\"') || '\"' ELSE f.source END"
    frame_parts = [
        "f.session_id::text",
        "f.id::text",
        source,
        "f.sequence::text",
        "to_char(f.captured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
        *(f"f.{c}::text" for c in FRAME_COLUMNS[4:]),
    ]
    face_parts = [f"COALESCE(fa.{c.removeprefix('face_')}::text, '')" for c in FACE_COLUMNS]
    return " || ',' || ".join([*frame_parts, *face_parts])


def csv_chunks_postgresql(*, session: EmotionSession, rows_per_piece: int = ROWS_PER_PIECE) -> Iterator[bytes]:
    """``csv_chunks`` with each line formatted by PostgreSQL and read through a server-side cursor (constant
    memory; one string per row on the Python side). Floats: PostgreSQL 12+ prints the shortest round-trip digits
    like Python's ``repr``; timestamps: ISO 8601 in UTC with exactly six fractional digits (``_iso_utc``)."""
    connection = connections[Frame.objects.db]
    sql = (
        f"SELECT {_csv_line_sql()} FROM {Frame._meta.db_table} f "
        f"LEFT JOIN {Face._meta.db_table} fa ON fa.frame_id = f.id "
        "WHERE f.session_id = %s ORDER BY f.offset_s, f.id, fa.id"
    )
    parts: list[str] = [",".join(CSV_COLUMNS) + "\r\n"]
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, [session.pk])
        while rows := cursor.fetchmany(CHUNK_SIZE):
            for (line,) in rows:
                parts.append(line + "\r\n")
                if len(parts) >= rows_per_piece:
                    yield "".join(parts).encode()
                    parts = []
    yield "".join(parts).encode()


def _frame_json(values: tuple) -> dict:
    frame = dict(zip(FRAME_COLUMNS, values[: len(FRAME_COLUMNS)], strict=True))
    frame["captured_at"] = frame["captured_at"].isoformat()
    frame["faces"] = []
    return frame


def json_chunks(*, session: EmotionSession, frames_per_piece: int = FRAMES_PER_PIECE) -> Iterator[bytes]:
    """JSON body of the session's export, in pieces of bytes::

    {"session": {"id", "name", "kind", "created_at", "ended_at", "target_fps"},
     "columns": {"offset_s": "seconds since session start", ...},
     "frames": [{"frame_id", "source", "sequence", "captured_at", "offset_s", "processing_ms", "width",
                 "height", "face_count", "faces": [{"face_id", "x", "y", "w", "h", "too_small", "label", "score",
                                                    "p_angry", ..., "p_neutral"}]}]}
    """
    header = {
        "session": {
            "id": session.pk,
            "name": session.name,
            "kind": session.kind,
            "created_at": session.created_at.isoformat(),
            "ended_at": session.ended_at.isoformat() if session.ended_at else None,
            "target_fps": session.target_fps,
        },
        "units": {
            "offset_s": "seconds since session start",
            "processing_ms": "milliseconds",
            "x, y, w, h, width, height": "pixels of the analysed frame",
            "score, p_*": "probability in [0, 1]",
            "too_small": "face too small to read its expression: counted, not in emotion shares",
            "track": "anonymous track number within the frame's source (camera connection); null for uploads",
            "smoothed_label, sp_*": "track-smoothed label and probabilities (causal EMA); empty/null when untracked",
            "yaw, pitch, roll": "head pose in degrees (yaw + toward the image's right, pitch + chin up, roll + "
            "clockwise in the image); null when not estimated",
        },
    }
    head = json.dumps(header)
    parts: list[str] = [head[:-1] + ', "frames": [']
    current: dict | None = None
    n_frames = 0
    n_face_columns = len(FRAME_COLUMNS)
    for row in export_rows(session=session):
        if current is None or current["frame_id"] != row[0]:
            if current is not None:
                parts.append(("," if n_frames else "") + json.dumps(current))
                n_frames += 1
                if n_frames % frames_per_piece == 0:
                    yield "".join(parts).encode()
                    parts = []
            current = _frame_json(row)
        if row[n_face_columns] is not None:
            current["faces"].append(dict(zip(FACE_COLUMNS, row[n_face_columns:], strict=True)))
    if current is not None:
        parts.append(("," if n_frames else "") + json.dumps(current))
    parts.append("]}")
    yield "".join(parts).encode()


def export_chunks(*, session: EmotionSession, fmt: str) -> Iterator[bytes]:
    """The export body of ``session`` in format ``fmt`` (``"csv"`` or ``"json"``). Raises ``ValueError`` else."""
    if fmt == "csv":
        return csv_chunks(session=session)
    if fmt == "json":
        return json_chunks(session=session)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")


def export_filename(*, session: EmotionSession, fmt: str) -> str:
    """Download file name: ``session-<id>-<slug of name>.<fmt>``."""
    slug = slugify(session.name)[:50] or "session"
    return f"session-{session.pk}-{slug}.{fmt}"


def _next_batch(iterator: Iterator[bytes], n: int) -> list[bytes]:
    batch = []
    for piece in iterator:
        batch.append(piece)
        if len(batch) >= n:
            break
    return batch


async def as_async_iterator(chunks: Iterable[bytes], *, pieces_per_hop: int = 8) -> AsyncIterator[bytes]:
    """Serve a synchronous, database-reading generator from an async context a few pieces at a time.

    Every step runs in Django's thread-sensitive sync thread (the one that owns the database connection), so the
    server-side cursor stays on one connection and memory stays bounded by ``pieces_per_hop`` pieces.
    """
    iterator = iter(chunks)
    step = sync_to_async(_next_batch, thread_sensitive=True)
    while True:
        batch = await step(iterator, pieces_per_hop)
        if not batch:
            return
        for piece in batch:
            yield piece
