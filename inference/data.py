"""FER2013 loading: Kaggle CSV (``.csv`` or ``.csv.gz``) and image-folder layouts, with a parsed-array cache.

Kaggle layout: a CSV with header ``emotion,pixels[,Usage]``; ``emotion`` is an integer 0..6 (see
``inference.labels.LABELS``), ``pixels`` 2304 space-separated integers 0..255 (a 48x48 grey image in row-major
order), ``Usage`` one of ``Training``, ``PublicTest``, ``PrivateTest``.

Image-folder layout (the common mirrors): ``<root>/<split>/<label>/*.png|jpg`` where ``split`` is e.g. ``train``
/ ``test`` / ``val`` / ``Training`` / ``PublicTest`` and ``label`` a label name (case-insensitive, aliases such
as ``Happiness`` accepted).

Malformed rows or files never abort a load: each is reported as a ``RowError`` naming the file and row, and the
rest is kept. Structural problems that make the whole file unusable (missing file, missing ``emotion``/``pixels``
column) raise ``DatasetError``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.labels import LABEL_ALIASES, NUM_CLASSES

IMAGE_SIZE = 48
PIXELS = IMAGE_SIZE * IMAGE_SIZE
USAGES = ("Training", "PublicTest", "PrivateTest")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_SPLIT_ALIASES = {
    "training": "Training",
    "train": "Training",
    "publictest": "PublicTest",
    "public_test": "PublicTest",
    "val": "PublicTest",
    "valid": "PublicTest",
    "validation": "PublicTest",
    "test": "PublicTest",
    "privatetest": "PrivateTest",
    "private_test": "PrivateTest",
}
# Bump when the cache layout changes so old caches are ignored.
_CACHE_VERSION = 1


class DatasetError(ValueError):
    """The dataset as a whole cannot be read (missing file, wrong header, unknown layout)."""


@dataclass(frozen=True)
class RowError:
    """One skipped row or file: ``source`` (file path), ``row`` (0-based data row, or -1 for a file), ``message``."""

    source: str
    row: int
    message: str

    def __str__(self) -> str:
        where = f"{self.source}" if self.row < 0 else f"{self.source}, row {self.row}"
        return f"{where}: {self.message}"


@dataclass
class Fer2013:
    """A loaded FER2013 split set.

    Attributes:
        images: ``uint8 (N, 48, 48)`` grey faces.
        labels: ``int64 (N,)`` label indices into ``LABELS``.
        usage: ``<U11 (N,)`` split name per row (``Training``/``PublicTest``/``PrivateTest``).
        rows: ``int64 (N,)`` original 0-based data-row index (CSV) or running file index (folders).
        errors: rows/files that were skipped, with reasons.
        sha256: hex digest of the source CSV file (or of the sorted file list for folders).
        source: the path that was loaded.
    """

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    rows: np.ndarray
    errors: list[RowError] = field(default_factory=list)
    sha256: str = ""
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, usage: str | None) -> Fer2013:
        """Rows whose ``Usage`` equals ``usage`` (all rows for ``None``). Raises ``DatasetError`` if unknown."""
        if usage is None:
            return self
        if usage not in USAGES:
            raise DatasetError(f"unknown usage {usage!r}; expected one of {', '.join(USAGES)}")
        keep = self.usage == usage
        return Fer2013(
            self.images[keep],
            self.labels[keep],
            self.usage[keep],
            self.rows[keep],
            self.errors,
            self.sha256,
            self.source,
        )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$FER_CACHE_DIR`` or ``$XDG_CACHE_HOME/fer_platform`` (default ``~/.cache/fer_platform``)."""
    if env := os.environ.get("FER_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fer_platform"


def load_fer2013(
    path: str | os.PathLike,
    usage: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Fer2013:
    """Load FER2013 from a Kaggle CSV (optionally gzipped) or an image-folder root.

    Args:
        path: ``fer2013.csv``, ``fer2013.csv.gz`` or a folder ``<root>/<split>/<label>/*.png``.
        usage: keep only this split (``Training``, ``PublicTest``, ``PrivateTest``); ``None`` keeps all.
        cache_dir: where parsed arrays are cached as ``.npz`` keyed by the CSV's SHA-256 (default
            ``default_cache_dir()``); a second load of the same file skips CSV parsing.
        use_cache: set ``False`` to neither read nor write the cache.

    Returns:
        ``Fer2013`` with ``images uint8 (N, 48, 48)`` and ``labels int64 (N,)``; skipped rows in ``errors``.

    Raises:
        DatasetError: the path does not exist, the CSV lacks ``emotion``/``pixels`` columns, or no usable row.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        data = _load_folder(path)
    else:
        data = _load_csv_cached(path, Path(cache_dir) if cache_dir else default_cache_dir(), use_cache)
    if len(data) == 0:
        raise DatasetError(f"{path}: no usable rows ({len(data.errors)} malformed)")
    return data.subset(usage)


def _load_csv_cached(path: Path, cache_dir: Path, use_cache: bool) -> Fer2013:
    sha = file_sha256(path)
    cache_file = cache_dir / f"fer2013-{sha[:32]}-v{_CACHE_VERSION}.npz"
    if use_cache and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                errors = [RowError(str(path), int(r), str(m)) for r, m in zip(z["error_rows"], z["error_messages"])]
                return Fer2013(z["images"], z["labels"], z["usage"], z["rows"], errors, sha, str(path))
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: re-parse and overwrite
    data = _parse_csv(path)
    data.sha256 = sha
    if use_cache:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                images=data.images,
                labels=data.labels,
                usage=data.usage,
                rows=data.rows,
                error_rows=np.array([e.row for e in data.errors], dtype=np.int64),
                error_messages=np.array([e.message for e in data.errors], dtype=str),
            )
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only cache location only costs speed
    return data


def _parse_csv(path: Path) -> Fer2013:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        fh = opener(path, "rt", encoding="utf-8", newline="")
        fh.read(0)
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as (gzipped) CSV text: {exc}") from exc
    errors: list[RowError] = []
    images: list[np.ndarray] = []
    labels: list[int] = []
    usages: list[str] = []
    rows: list[int] = []
    source = str(path)
    with fh:
        try:
            reader = csv.reader(fh)
            header = next(reader, None)
        except (csv.Error, gzip.BadGzipFile, OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: cannot be read as (gzipped) CSV text: {exc}") from exc
        if header is None:
            raise DatasetError(f"{path}: empty file, expected header 'emotion,pixels[,Usage]'")
        columns = [h.strip().lower() for h in header]
        if "emotion" not in columns or "pixels" not in columns:
            raise DatasetError(f"{path}: header {header!r} lacks 'emotion' and/or 'pixels' (Kaggle FER2013 format)")
        i_emotion, i_pixels = columns.index("emotion"), columns.index("pixels")
        i_usage = columns.index("usage") if "usage" in columns else None
        row = -1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except (csv.Error, OSError, EOFError, UnicodeDecodeError) as exc:
                errors.append(RowError(source, row + 1, f"unreadable data, stopping here: {exc}"))
                break
            row += 1
            parsed = _parse_record(record, i_emotion, i_pixels, i_usage, len(columns))
            if isinstance(parsed, str):
                errors.append(RowError(source, row, parsed))
                continue
            image, label, usage = parsed
            images.append(image)
            labels.append(label)
            usages.append(usage)
            rows.append(row)
    return Fer2013(
        np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        np.asarray(labels, dtype=np.int64),
        np.asarray(usages, dtype="<U11"),
        np.asarray(rows, dtype=np.int64),
        errors,
        source=source,
    )


def _parse_record(record, i_emotion, i_pixels, i_usage, n_columns):
    """Return ``(image, label, usage)`` or an error message string."""
    if len(record) < n_columns:
        return f"expected {n_columns} columns, got {len(record)}"
    try:
        label = int(record[i_emotion])
    except ValueError:
        return f"emotion {record[i_emotion]!r} is not an integer"
    if not 0 <= label < NUM_CLASSES:
        return f"emotion {label} out of range 0..{NUM_CLASSES - 1}"
    try:
        values = np.array(record[i_pixels].split(), dtype=np.int64)
    except ValueError:
        return "pixels contain a non-integer value"
    if values.size != PIXELS:
        return f"expected {PIXELS} pixel values, got {values.size}"
    if values.min() < 0 or values.max() > 255:
        return "pixel values outside 0..255"
    usage = record[i_usage].strip() if i_usage is not None else "Training"
    if usage not in USAGES:
        return f"unknown Usage {usage!r}"
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE), label, usage


def _load_folder(root: Path) -> Fer2013:
    import cv2

    errors: list[RowError] = []
    images, labels, usages, rows = [], [], [], []
    digest = hashlib.sha256()
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in _SPLIT_ALIASES]
    if not split_dirs:
        raise DatasetError(
            f"{root}: no split folders found (expected e.g. train/ and test/ or Training/ and PublicTest/)"
        )
    index = 0
    for split_dir in split_dirs:
        usage = _SPLIT_ALIASES[split_dir.name.lower()]
        for label_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            label = LABEL_ALIASES.get(label_dir.name.lower())
            if label is None:
                errors.append(RowError(str(label_dir), -1, "unknown label folder name, skipped"))
                continue
            for file in sorted(label_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                digest.update(str(file.relative_to(root)).encode())
                image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    errors.append(RowError(str(file), -1, "not a readable image"))
                    continue
                if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
                    image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
                images.append(image)
                labels.append(label)
                usages.append(usage)
                rows.append(index)
                index += 1
    return Fer2013(
        np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        np.asarray(labels, dtype=np.int64),
        np.asarray(usages, dtype="<U11"),
        np.asarray(rows, dtype=np.int64),
        errors,
        digest.hexdigest(),
        str(root),
    )


def class_counts(labels: np.ndarray) -> np.ndarray:
    """``int64 (7,)`` number of rows per label."""
    return np.bincount(labels, minlength=NUM_CLASSES).astype(np.int64)
