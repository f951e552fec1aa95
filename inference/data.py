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


# --- FER+ votes (Barsoum et al. 2016, "Training Deep Networks for Facial Expression Recognition with Crowd-Sourced
# Label Distribution", arXiv:1608.01041; Microsoft's ``fer2013new.csv``) ---------------------------------------------

#: The ten vote columns of ``fer2013new.csv``, in file order.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
#: For each FER2013 label (``LABELS`` order: angry, disgust, fear, happy, sad, surprise, neutral), the index of its
#: FER+ vote column. Contempt (7), unknown (8) and not-a-face (9) have no FER2013 label.
FERPLUS_TO_FER2013: tuple[int, ...] = (4, 5, 6, 1, 3, 2, 0)


@dataclass
class FerPlusVotes:
    """FER+ vote counts, one row per FER2013 data row of the same file order.

    Attributes:
        votes: ``int64 (N, 10)`` tagger votes per row in ``FERPLUS_COLUMNS`` order (10 taggers per face in the
            released file, so rows usually sum to 10).
        rows: ``int64 (N,)`` 0-based data-row index of each vote row (= the FER2013 data row it belongs to).
        usage: ``<U11 (N,)`` the ``Usage`` column.
        errors: malformed rows that were skipped, with their row numbers.
        sha256: hex digest of the file.
        source: the path that was loaded.
    """

    votes: np.ndarray
    rows: np.ndarray
    usage: np.ndarray
    errors: list[RowError] = field(default_factory=list)
    sha256: str = ""
    source: str = ""

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def load_ferplus(path: str | os.PathLike) -> FerPlusVotes:
    """Load ``fer2013new.csv`` (FER+ votes; plain or gzipped CSV).

    Row *i* of the file (0-based, header excluded) belongs to data row *i* of the FER2013 CSV it was made from: the
    alignment is by order, as in Microsoft's release. A malformed row (missing columns, a vote that is not a
    non-negative integer, an unknown ``Usage``) is skipped and reported as a ``RowError`` with its row number; the
    other rows keep their own row numbers, so a bad row never shifts the alignment.

    Returns:
        ``FerPlusVotes`` with ``votes int64 (N, 10)`` in ``FERPLUS_COLUMNS`` order.

    Raises:
        DatasetError: missing or unreadable file, or a header without the ten vote columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    source = str(path)
    errors: list[RowError] = []
    votes: list[list[int]] = []
    rows: list[int] = []
    usages: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: empty file, expected the FER+ header")
            names = [h.strip() for h in header]
            missing = [c for c in ("Usage", *FERPLUS_COLUMNS) if c not in names]
            if missing:
                raise DatasetError(f"{path}: header {header!r} lacks FER+ column(s) {', '.join(missing)}")
            i_usage = names.index("Usage")
            i_votes = [names.index(c) for c in FERPLUS_COLUMNS]
            for row, record in enumerate(reader):
                if len(record) < len(names):
                    errors.append(RowError(source, row, f"expected {len(names)} columns, got {len(record)}"))
                    continue
                try:
                    counts = [int(record[i]) for i in i_votes]
                except ValueError:
                    errors.append(RowError(source, row, "a vote count is not an integer"))
                    continue
                if min(counts) < 0:
                    errors.append(RowError(source, row, "negative vote count"))
                    continue
                usage = record[i_usage].strip()
                if usage not in USAGES:
                    errors.append(RowError(source, row, f"unknown Usage {usage!r}"))
                    continue
                votes.append(counts)
                rows.append(row)
                usages.append(usage)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise DatasetError(f"{path}: cannot be read as (gzipped) CSV text: {exc}") from exc
    return FerPlusVotes(
        np.asarray(votes, dtype=np.int64).reshape(-1, len(FERPLUS_COLUMNS)),
        np.asarray(rows, dtype=np.int64),
        np.asarray(usages, dtype="<U11"),
        errors,
        file_sha256(path),
        source,
    )


def align_ferplus(dataset: Fer2013, ferplus: FerPlusVotes) -> tuple[np.ndarray, np.ndarray]:
    """FER+ votes for each row of ``dataset``, matched by data-row number (``dataset.rows`` = ``ferplus.rows``).

    Returns:
        ``(votes int64 (N, 10), found bool (N,))``: ``found`` is False where the vote row is missing or malformed
        (its votes are then all zero) or where its ``Usage`` differs from the FER2013 row's (a misaligned file).
    """
    lookup = np.full(max(int(dataset.rows.max(initial=-1)), int(ferplus.rows.max(initial=-1))) + 1, -1, np.int64)
    lookup[ferplus.rows] = np.arange(len(ferplus))
    index = lookup[dataset.rows] if len(dataset) else np.zeros(0, np.int64)
    found = index >= 0
    found[found] = ferplus.usage[index[found]] == dataset.usage[found]
    votes = np.zeros((len(dataset), len(FERPLUS_COLUMNS)), np.int64)
    votes[found] = ferplus.votes[index[found]]
    return votes, found


def ferplus_soft_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft training targets over the 7 FER2013 labels from FER+ votes.

    The target is the normalised vote distribution over the 7 FER2013 emotions (``LABELS`` order); votes for
    contempt, unknown and not-a-face are left out because the 7-class model cannot express them. A face is
    dropped (``keep`` False) when its most-voted column is contempt, unknown or not-a-face, ties included, or when
    it has no emotion vote: the FER+ paper (Barsoum et al. 2016, section 3) drops unknown and not-a-face faces, and
    a contempt face would otherwise be taught as its minority emotions.

    Args:
        votes: ``int (N, 10)`` counts in ``FERPLUS_COLUMNS`` order.

    Returns:
        ``(targets float32 (N, 7), keep bool (N,))``; rows of dropped faces are all zero and sum to 0, kept rows sum
        to 1.
    """
    votes = np.asarray(votes, dtype=np.float64).reshape(-1, len(FERPLUS_COLUMNS))
    emotions = votes[:, list(FERPLUS_TO_FER2013)]
    best_emotion = emotions.max(axis=1)
    keep = (best_emotion > 0) & (best_emotion > votes[:, 7:].max(axis=1))
    targets = np.zeros_like(emotions)
    targets[keep] = emotions[keep] / emotions[keep].sum(axis=1, keepdims=True)
    return targets.astype(np.float32), keep


def ferplus_majority(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FER+ majority (plurality) label among the 7 FER2013 emotions, for faces kept by ``ferplus_soft_targets``.

    Returns:
        ``(top bool (N, 7), keep bool (N,))``: ``top[i, k]`` is True for every emotion with the most votes of face
        *i* (several when tied: a prediction matching any of them agrees with the majority); ``keep`` as in
        ``ferplus_soft_targets``.
    """
    targets, keep = ferplus_soft_targets(votes)
    top = (targets == targets.max(axis=1, keepdims=True)) & keep[:, None]
    return top, keep


def ferplus_clear_majority(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FER+ release's own "majority" labels (``ferplus.py`` of github.com/microsoft/FERPlus, mode ``majority``).

    Votes of 1 are removed as outliers; a face keeps a label only when one column then holds more than half of the
    remaining votes; faces whose label is contempt, unknown or not-a-face are dropped here (no FER2013 class).

    Returns:
        ``(labels int64 (N,), keep bool (N,))`` in ``LABELS`` order (labels of dropped faces are -1).
    """
    votes = np.asarray(votes, dtype=np.float64).reshape(-1, len(FERPLUS_COLUMNS))
    cleaned = np.where(votes <= 1, 0.0, votes)
    best = cleaned.argmax(axis=1)
    clear = cleaned.max(axis=1) > 0.5 * cleaned.sum(axis=1)
    to_fer2013 = np.full(len(FERPLUS_COLUMNS), -1, np.int64)
    to_fer2013[list(FERPLUS_TO_FER2013)] = np.arange(NUM_CLASSES)
    labels = np.where(clear, to_fer2013[best], -1)
    return labels, labels >= 0
