"""Training of the FER CNN on FER2013 (``python -m inference train``).

Recipe (every choice is a flag of ``train``):

- Data: the ``Training`` split for fitting, ``PublicTest`` for validation, early stopping and checkpoint choice
  (PrivateTest is never touched). Parsed arrays are cached (see ``inference.data``).
- Labels (``--labels``): ``fer2013`` trains on the one-hot FER2013 label; ``ferplus`` on the FER+ vote distribution
  over the 7 FER2013 classes (Barsoum et al. 2016, arXiv:1608.01041; ``--ferplus fer2013new.csv``, aligned by row
  order); ``mixed`` on ``--mix-weight`` x FER2013 one-hot + the rest x FER+ distribution. With FER+ targets,
  contempt, unknown and not-a-face votes are left out and faces whose most-voted column is one of those three are
  dropped from training and validation (``inference.data.ferplus_soft_targets``). PublicTest accuracy for the
  checkpoint choice is measured against the argmax of the same kind of target.
- Low resolution (``--lowres-share p``): after the affine warp, a share ``p`` of the faces is shrunk to a random
  side of 12..40 px (area averaging) and scaled back to 48 px bilinearly, as ``crop_face`` does with a small face
  (``make_lowres``).
- Warm start (``--init model.keras``): the weights of an earlier model of the same architecture, then a new
  optimiser and schedule; the card records the source and adds its epochs and wall time
  (``*_including_init*`` keys).
- Augmentation, one fused affine warp per image (``tf.raw_ops.ImageProjectiveTransformV3``): horizontal flip
  (p = 0.5), rotation +-15 deg, scale 0.85..1.15, shift +-10 %; then contrast 0.7..1.3 and brightness +-25 grey
  levels; then random erasing (Zhong et al. 2017, arXiv:1708.04896) of one 8..20 px rectangle with p = 0.5.
- Class imbalance (disgust 436 vs happy 7,215 training images): per-sample loss weights
  ``w_c = sqrt(median(n) / n_c)``, normalised to mean 1 over the training set. The square root (rather than full
  inverse frequency) keeps overall accuracy while lifting disgust recall.
- Loss: categorical cross-entropy with label smoothing (``--label-smoothing``, default 0.1; Szegedy et al. 2016,
  arXiv:1512.00567). Class weights use the argmax of each face's target.
- Optimiser: AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101), weight decay 0.05 on kernels; learning rate
  linear warm-up for 2 epochs to the peak, then cosine decay to 0 at the last epoch.
- Checkpoints in ``<out>/checkpoints``: ``last.keras`` (model + optimiser state) and ``state.json`` after every
  epoch, ``best.keras`` on each new best PublicTest accuracy. ``--resume`` continues from ``last.keras``
  (optimiser state and step counter included); a different ``--epochs`` on resume re-fits the cosine schedule. The
  state keeps the seconds of epochs and of whole invocations (updated at every checkpoint, so an interrupted
  invocation counts up to its last epoch); the card adds them up over all resumed runs.
- Stochastic weight averaging (``--swa-epochs K``, Izmailov et al. 2018, arXiv:1803.05407): the weights after each
  of the last K epochs are averaged (a running mean in ``checkpoints/swa.npz``, kept across ``--resume``), batch-norm
  statistics are recomputed with one pass over the un-augmented training faces, and the averaged model replaces the
  best checkpoint when its PublicTest accuracy is higher. ``--resume --epochs N --swa-epochs K`` on a finished run
  continues with a short second cosine cycle (a warm restart) whose epochs are averaged.
- Early stopping when PublicTest accuracy has not improved for ``--patience`` epochs.
- Precision (``--precision``): ``auto`` trains with Keras's ``mixed_bfloat16`` policy (bfloat16 compute, float32
  weights and softmax) when the CPU has native bfloat16 instructions (``avx512_bf16`` / ``amx_bf16``; measured on
  this 2-core AMD EPYC: 132 vs 259 ms per 64-face step) or a GPU is present, else ``float32``. The saved and
  exported models are always float32.
- Seeded (``--seed``): NumPy, Python and TensorFlow RNGs, and the shuffling order.

Outputs in ``--out``: ``model.keras`` (best), ``model.onnx`` (serving export, checked against Keras),
``model_card.json``, ``training_curves.png``, ``confusion_matrix.png``, ``history.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # training only: the serving path never imports this module

from inference.data import (
    DatasetError,
    Fer2013,
    align_ferplus,
    class_counts,
    ferplus_soft_targets,
    load_fer2013,
    load_ferplus,
)
from inference.labels import LABELS, NUM_CLASSES

#: Label recipes of ``train --labels``.
LABEL_RECIPES: tuple[str, ...] = ("fer2013", "ferplus", "mixed")
#: Side range (pixels, inclusive) of the low-resolution augmentation (issue 10: faces of 12..40 px).
LOWRES_SIZES: tuple[int, int] = (12, 40)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """``float32 (7,)`` loss weight per label, ``sqrt(median(n) / n_c)`` normalised to mean 1 over ``labels``.

    Labels absent from ``labels`` get weight 0 (they contribute no samples anyway).
    """
    counts = class_counts(labels).astype(np.float64)
    present = counts > 0
    weights = np.zeros(NUM_CLASSES)
    weights[present] = np.sqrt(np.median(counts[present]) / counts[present])
    weights /= (weights[labels]).mean()
    return weights.astype(np.float32)


class TfRandom:
    """Random numbers drawn inside TensorFlow graphs (the ``tf.data`` pipeline of the TensorFlow backend): each call
    of the augmentation draws new ones. ``shape`` may hold the batch size as a tensor."""

    def uniform(self, shape, low: float, high: float):
        import tensorflow as tf

        return tf.random.uniform(shape, low, high)

    def integers(self, shape, low: int, high: int):
        """Integers in ``low .. high - 1``."""
        import tensorflow as tf

        return tf.random.uniform(shape, low, high, dtype=tf.int32)


class NumpyRandom:
    """Random numbers from a NumPy ``Generator`` (the batches of backends without ``tf.data``: JAX, PyTorch)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def uniform(self, shape, low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, tuple(int(d) for d in shape)).astype(np.float32)

    def integers(self, shape, low: int, high: int) -> np.ndarray:
        """Integers in ``low .. high - 1``."""
        return self.rng.integers(low, high, tuple(int(d) for d in shape)).astype(np.int32)


def default_random():
    """``TfRandom()`` under Keras's TensorFlow backend, else ``NumpyRandom`` on a fresh unseeded generator."""
    return TfRandom() if keras.backend.backend() == "tensorflow" else NumpyRandom(np.random.default_rng())


def make_augment(
    image_size: int = 48,
    max_rotation_deg: float = 15.0,
    scale: float = 0.15,
    shift: float = 0.10,
    lowres_share: float = 0.0,
    lowres_sizes: tuple[int, int] = LOWRES_SIZES,
):
    """Return ``augment(images, random=None) -> images`` for ``float32 (B, H, W, 1)`` batches in 0..255.

    Written with ``keras.ops`` only, so it runs under every Keras backend (TensorFlow inside ``tf.data``; JAX or
    PyTorch, e.g. on a lent GPU machine, which has no TensorFlow); ``random`` (``TfRandom`` or ``NumpyRandom``,
    default ``default_random()``) draws the parameters. The result is a tensor of the backend.
    ``lowres_share`` of the faces (0: none, the recipe of the first shipped model) are, after the affine warp,
    shrunk to a random side drawn uniformly from ``lowres_sizes`` (inclusive, pixels), rounded to grey levels and
    scaled back up (see ``make_lowres``).
    """
    ops = keras.ops
    lowres = make_lowres(image_size, lowres_share, lowres_sizes) if lowres_share > 0 else None

    c = (image_size - 1) / 2.0
    max_rot = math.radians(max_rotation_deg)

    def augment(images, random=None):
        random = random or default_random()
        images = ops.convert_to_tensor(images, "float32")
        b = ops.shape(images)[0]
        theta = random.uniform([b], -max_rot, max_rot)
        s = random.uniform([b], 1.0 - scale, 1.0 + scale)
        flip = ops.where(random.uniform([b], 0.0, 1.0) < 0.5, -1.0, 1.0)
        tx = random.uniform([b], -shift, shift) * image_size
        ty = random.uniform([b], -shift, shift) * image_size
        cos, sin = ops.cos(theta) / s, ops.sin(theta) / s
        # Output pixel (x, y) samples input M @ (x - c - tx, y - c - ty) + c, M = R(theta)/s @ diag(flip, 1).
        m00, m01, m10, m11 = cos * flip, sin, -sin * flip, cos
        a2 = c - m00 * (c + tx) - m01 * (c + ty)
        b2 = c - m10 * (c + tx) - m11 * (c + ty)
        zeros = ops.zeros_like(m00)
        transforms = ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)
        out = ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="reflect")
        if lowres is not None:
            out = lowres(out, random)
        mean = ops.mean(out, axis=(1, 2, 3), keepdims=True)
        contrast = random.uniform([b, 1, 1, 1], 0.7, 1.3)
        brightness = random.uniform([b, 1, 1, 1], -25.0, 25.0)
        out = (out - mean) * contrast + mean + brightness
        # Random erasing: one rectangle per image with p = 0.5, filled with uniform noise.
        h = random.integers([b, 1, 1, 1], 8, 21)
        w = random.integers([b, 1, 1, 1], 8, 21)
        y0 = random.integers([b, 1, 1, 1], 0, image_size - 8)
        x0 = random.integers([b, 1, 1, 1], 0, image_size - 8)
        ys = ops.reshape(ops.arange(image_size, dtype="int32"), (1, image_size, 1, 1))
        xs = ops.reshape(ops.arange(image_size, dtype="int32"), (1, 1, image_size, 1))
        on = random.uniform([b, 1, 1, 1], 0.0, 1.0) < 0.5
        mask = on & (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
        noise = random.uniform(ops.shape(out), 0.0, 255.0)
        out = ops.where(mask, noise, out)
        return ops.clip(out, 0.0, 255.0)

    return augment


def resize_matrix(src: int, dst: int, method: str) -> np.ndarray:
    """``float32 (dst, src)`` matrix ``R`` such that ``R @ v`` resizes the signal ``v`` (length ``src``) to ``dst``
    samples, and ``R @ X @ R.T`` an ``src x src`` image to ``dst x dst``.

    ``method``: ``"area"`` (each output pixel the mean of the input area it covers, weighted by overlap: OpenCV's
    ``INTER_AREA`` and TensorFlow's ``area`` when shrinking) or ``"bilinear"`` (half-pixel centres, edges clamped:
    OpenCV's ``INTER_LINEAR`` and TensorFlow's ``bilinear`` without antialiasing).

    Raises:
        ValueError: another ``method``, or a size under 1.
    """
    if src < 1 or dst < 1:
        raise ValueError(f"sizes must be >= 1, got {src} -> {dst}")
    m = np.zeros((dst, src), np.float64)
    step = src / dst
    if method == "area":
        for i in range(dst):
            lo, hi = i * step, (i + 1) * step
            for j in range(int(math.floor(lo)), min(src, int(math.ceil(hi)))):
                m[i, j] = (min(hi, j + 1) - max(lo, j)) / step
    elif method == "bilinear":
        for i in range(dst):
            x = min(max((i + 0.5) * step - 0.5, 0.0), src - 1.0)
            j0 = int(math.floor(x))
            frac = x - j0
            m[i, j0] += 1.0 - frac
            m[i, min(j0 + 1, src - 1)] += frac
    else:
        raise ValueError(f"method must be area or bilinear, not {method!r}")
    return m.astype(np.float32)


def make_lowres(image_size: int = 48, share: float = 0.5, sizes: tuple[int, int] = LOWRES_SIZES):
    """Return ``lowres(images, random=None)``: a random ``share`` of a ``float32 (B, H, W, 1)`` batch shrunk and
    scaled back (``keras.ops`` only, any backend; ``random`` as in ``make_augment``).

    Each chosen face is resized to ``s x s`` pixels, ``s`` uniform in ``sizes[0]..sizes[1]`` (inclusive), with area
    averaging (OpenCV's ``INTER_AREA``, what a camera's small face amounts to), rounded to integer grey levels, and
    resized back to ``image_size`` bilinearly (``INTER_LINEAR``, what ``inference.classifier.crop_face`` does with
    a face smaller than 48 px). The other faces pass unchanged. Both resizes are matrix products
    (``resize_matrix``), so faces of different sides share one batched computation.
    """
    ops = keras.ops
    low, high = int(sizes[0]), int(sizes[1])
    down = np.zeros((high - low + 1, high, image_size), np.float32)  # zero rows beyond the side: padding
    up = np.zeros((high - low + 1, image_size, high), np.float32)
    for k, side in enumerate(range(low, high + 1)):
        down[k, :side] = resize_matrix(image_size, side, "area")
        up[k, :, :side] = resize_matrix(side, image_size, "bilinear")
    down, up = ops.convert_to_tensor(down), ops.convert_to_tensor(up)  # once, not on every batch

    def lowres(images, random=None):
        random = random or default_random()
        images = ops.convert_to_tensor(images, "float32")
        b = ops.shape(images)[0]
        chosen = random.uniform([b], 0.0, 1.0) < share
        pick = random.integers([b], 0, high - low + 1)
        d, u = ops.take(down, pick, axis=0), ops.take(up, pick, axis=0)
        small = ops.round(ops.einsum("bij,bjk,blk->bil", d, images[..., 0], d))
        back = ops.einsum("bij,bjk,blk->bil", u, small, u)[..., None]
        return ops.where(ops.reshape(chosen, (-1, 1, 1, 1)), back, images)

    return lowres


class FaceBatches(keras.utils.PyDataset):
    """Batches for Keras backends without ``tf.data`` (JAX, PyTorch: the lent GPU machines have no TensorFlow).

    Yields ``(faces, targets)`` or, with ``weights``, ``(faces, targets, weights)``: ``float32 (b, 48, 48, 1)``
    faces. With ``shuffle`` a new order every epoch; with ``augment`` (``make_augment``) each batch is augmented
    with NumPy randomness seeded by ``(seed, epoch, batch index)``, so runs are reproducible whatever order Keras
    asks for the batches in. ``drop_remainder`` leaves out the last incomplete batch (as the ``tf.data`` path does
    for training).
    """

    def __init__(
        self, x, y, weights=None, *, batch_size: int, seed: int = 0, augment=None, shuffle=False, drop_remainder=False
    ):
        super().__init__()
        self.x, self.y, self.weights = x, y, weights
        self.batch_size, self.seed, self.augment = int(batch_size), int(seed), augment
        self.shuffle, self.drop_remainder = shuffle, drop_remainder
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        n = len(self.x)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __getitem__(self, index: int):
        ids = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x[ids]
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = keras.ops.convert_to_numpy(self.augment(x, NumpyRandom(rng))).astype(np.float32)
        return (x, self.y[ids]) if self.weights is None else (x, self.y[ids], self.weights[ids])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def start_at(self, epoch: int) -> None:
        """Continue with the order and augmentation of ``epoch`` (0-based): a resumed run does not replay epoch 0's."""
        self.epoch = int(epoch)
        self.order = self._order()


def cpu_has_bf16() -> bool:
    """True when ``/proc/cpuinfo`` lists native bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """Map ``auto`` / ``float32`` / ``bfloat16`` to a Keras dtype policy name.

    ``auto`` gives ``mixed_bfloat16`` when a GPU is visible (``gpu_names``) or the CPU has native bfloat16 (see
    ``cpu_has_bf16``), else ``float32``.

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision == "float32":
        return "float32"
    if precision == "bfloat16":
        return "mixed_bfloat16"
    if precision != "auto":
        raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
    return "mixed_bfloat16" if gpu_names() or cpu_has_bf16() else "float32"


def gpu_names() -> list[str]:
    """The GPUs Keras's backend (TensorFlow, JAX or PyTorch) trains on here; ``[]`` on a CPU-only machine."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def to_float32(model):
    """A float32 copy of ``model`` (same architecture and weights) whatever dtype policy it was trained with.

    Mixed-precision layers keep float32 weights, so the copy is exact; its config names ``float32`` everywhere, so
    the ``.keras`` file and the ONNX export contain no bfloat16 casts.
    """
    import keras

    def strip(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return "float32"
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clone = keras.Model.from_config(strip(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    clone.set_weights(model.get_weights())
    return clone


@dataclass
class TrainingData:
    """The faces and targets of one training run (step 1 of ``train``).

    Attributes:
        dataset: the whole loaded ``Fer2013`` (for its SHA-256 and skipped rows).
        train_set, val_set: ``Training`` and ``PublicTest`` rows used (faces without usable FER+ votes are left out
            for ``labels`` ``ferplus`` and ``mixed``).
        y_train, y_val: ``float32 (N, 7)`` targets in ``LABELS`` order, rows summing to 1.
        public_test: all ``PublicTest`` rows (the model card's evaluation set).
        public_test_votes: ``int64 (M, 10)`` FER+ votes of ``public_test`` (zeros where a vote row is missing;
            ``None`` without a FER+ file).
        labels: description of the targets for the model card.
    """

    dataset: Fer2013
    train_set: Fer2013
    val_set: Fer2013
    y_train: np.ndarray
    y_val: np.ndarray
    public_test: Fer2013
    public_test_votes: np.ndarray | None
    labels: dict


def make_targets(fer2013_labels: np.ndarray, votes: np.ndarray | None, labels: str, mix_weight: float = 0.5):
    """Training targets for one of the label recipes.

    Args:
        fer2013_labels: ``int (N,)`` FER2013 labels.
        votes: ``int (N, 10)`` FER+ votes in ``FERPLUS_COLUMNS`` order (``None`` allowed for ``fer2013``).
        labels: ``fer2013`` (one-hot FER2013 label), ``ferplus`` (normalised FER+ vote distribution over the 7
            classes, see ``inference.data.ferplus_soft_targets``) or ``mixed`` (``mix_weight`` x FER2013 one-hot +
            ``(1 - mix_weight)`` x FER+ distribution).
        mix_weight: weight of the FER2013 one-hot in ``mixed``, 0..1.

    Returns:
        ``(targets float32 (N, 7), keep bool (N,))``: ``keep`` is all True for ``fer2013``, else the faces that FER+
        keeps (not a contempt / unknown / not-a-face majority).

    Raises:
        ValueError: an unknown ``labels``, ``mix_weight`` outside 0..1, or no ``votes`` for ``ferplus``/``mixed``.
    """
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(fer2013_labels, dtype=np.int64)]
    if labels == "fer2013":
        return one_hot, np.ones(len(one_hot), dtype=bool)
    if labels not in LABEL_RECIPES:
        raise ValueError(f"labels must be one of {', '.join(LABEL_RECIPES)}, not {labels!r}")
    if votes is None:
        raise ValueError(f"labels {labels!r} need FER+ votes (--ferplus fer2013new.csv)")
    if not 0.0 <= mix_weight <= 1.0:
        raise ValueError(f"mix_weight must lie in 0..1, not {mix_weight}")
    soft, keep = ferplus_soft_targets(votes)
    if labels == "mixed":
        soft = mix_weight * one_hot + (1.0 - mix_weight) * soft
    soft[~keep] = 0.0
    return soft.astype(np.float32), keep


def load_training_data(
    data: str,
    labels: str = "fer2013",
    ferplus: str | None = None,
    mix_weight: float = 0.5,
    max_train_rows: int | None = None,
    log=print,
    teacher: str | None = None,
    teacher_weight: float = 0.5,
) -> TrainingData:
    """Step 1 of ``train``: load FER2013 (and FER+ votes), split Training / PublicTest, build the targets.

    With ``teacher`` (an ONNX model, e.g. the shipped ensemble), the training targets are knowledge distillation
    targets (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531, 2015, at
    temperature 1): ``teacher_weight`` x the teacher's probabilities on the unaugmented face (flip TTA on every face,
    float model) + ``(1 - teacher_weight)`` x the ``labels`` recipe's target. So a shrunk training face
    (``lowres_share``) learns what the teacher reads on the sharp one. PublicTest targets stay the recipe's.

    Raises:
        inference.data.DatasetError: unreadable data, no ``Training``/``PublicTest`` rows, or ``ferplus``/``mixed``
            without a FER+ file.
        ValueError: ``teacher_weight`` outside 0..1. inference.classifier.ModelLoadError: unusable ``teacher``.
    """
    if labels != "fer2013" and not ferplus:
        raise DatasetError(f"--labels {labels} needs --ferplus PATH (FER+ fer2013new.csv)")
    dataset = load_fer2013(data)
    _log_errors(dataset.errors, log)
    train_set, val_set = dataset.subset("Training"), dataset.subset("PublicTest")
    if len(train_set) == 0 or len(val_set) == 0:
        raise DatasetError(f"{data}: needs both Training and PublicTest rows (got {len(train_set)}, {len(val_set)})")
    if max_train_rows:
        train_set = _take(train_set, np.arange(len(train_set)) < max_train_rows)
    public_test, public_test_votes = val_set, None
    n_train, n_val = len(train_set), len(val_set)
    votes_train = votes_val = None
    info: dict[str, Any] = {"training": labels}
    if ferplus:
        votes = load_ferplus(ferplus)
        _log_errors(votes.errors, log)
        votes_train, found_train = align_ferplus(train_set, votes)
        votes_val, found_val = align_ferplus(val_set, votes)
        public_test_votes = votes_val
        info.update(ferplus_source=Path(ferplus).name, ferplus_sha256=votes.sha256)
        if labels != "fer2013":
            train_set, votes_train = _take(train_set, found_train), votes_train[found_train]
            val_set, votes_val = _take(val_set, found_val), votes_val[found_val]
    y_train, keep_train = make_targets(train_set.labels, votes_train, labels, mix_weight)
    y_val, keep_val = make_targets(val_set.labels, votes_val, labels, mix_weight)
    if labels != "fer2013":
        # labels other than fer2013 need a FER+ file (checked on entry), so both vote arrays are set
        assert votes_train is not None and votes_val is not None
        info.update(
            mix_fer2013_weight=mix_weight if labels == "mixed" else 0.0,
            dropped_training_faces=int((~keep_train).sum() + n_train - len(train_set)),
            dropped_public_test_faces=int((~keep_val).sum() + n_val - len(val_set)),
            rule="soft target = votes over the 7 FER2013 classes, normalised; contempt, unknown and not-a-face votes"
            " left out; faces whose most-voted column is contempt, unknown or not-a-face (ties included) dropped",
        )
        train_set, y_train, votes_train = _take(train_set, keep_train), y_train[keep_train], votes_train[keep_train]
        val_set, y_val, votes_val = _take(val_set, keep_val), y_val[keep_val], votes_val[keep_val]
    if teacher:
        if not 0.0 <= teacher_weight <= 1.0:
            raise ValueError(f"teacher_weight must lie in 0..1, not {teacher_weight}")
        from inference.classifier import EmotionClassifier
        from inference.data import file_sha256

        teacher_clf = EmotionClassifier(teacher, flip_tta=True, tta_margin=1.0, quantized=False)
        taught = teacher_clf.predict_proba(train_set.images)
        y_train = (teacher_weight * taught + (1.0 - teacher_weight) * y_train).astype(np.float32)
        info.update(
            teacher=str(teacher),
            teacher_sha256=file_sha256(teacher),
            teacher_weight=teacher_weight,
            teacher_rule="target = teacher_weight x teacher probabilities (flip TTA, unaugmented face) + "
            "(1 - teacher_weight) x the labels recipe's target",
        )
        log(f"distillation: teacher {teacher} (weight {teacher_weight}) on {len(taught)} training faces")
    log(
        f"data: {len(train_set)} training rows, {len(val_set)} PublicTest rows, labels {labels}, "
        f"sha256 {dataset.sha256[:16]}..."
    )
    return TrainingData(dataset, train_set, val_set, y_train, y_val, public_test, public_test_votes, info)


def _log_errors(errors, log) -> None:
    for err in errors[:20]:
        log(f"skipped: {err}")
    if len(errors) > 20:
        log(f"... and {len(errors) - 20} more skipped rows")


def _take(subset: Fer2013, keep: np.ndarray) -> Fer2013:
    return Fer2013(
        subset.images[keep],
        subset.labels[keep],
        subset.usage[keep],
        subset.rows[keep],
        subset.errors,
        subset.sha256,
        subset.source,
    )


def _datasets(
    train_data: TrainingData,
    batch_size: int,
    seed: int,
    weights: np.ndarray,
    lowres_share: float,
    select_size: int | None = None,
):
    """``(train_ds, val_ds)``: shuffled, augmented training batches of ``(faces, targets, loss weights)`` (the last
    incomplete batch left out) and PublicTest batches of ``(faces, targets)``; ``tf.data`` pipelines under the
    TensorFlow backend, ``FaceBatches`` under the others."""
    from inference.evaluate import shrink_faces

    augment = make_augment(train_data.train_set.images.shape[1], lowres_share=lowres_share)
    x_train = train_data.train_set.images[..., None].astype(np.float32)
    y_train = train_data.y_train
    w_train = weights[y_train.argmax(axis=1)]
    val_images = train_data.val_set.images
    if select_size:  # checkpoints chosen on PublicTest faces as small as the model is made for
        val_images = shrink_faces(val_images, select_size)
    x_val = val_images[..., None].astype(np.float32)
    if keras.backend.backend() != "tensorflow":
        train_ds = FaceBatches(
            x_train,
            y_train,
            w_train,
            batch_size=batch_size,
            seed=seed,
            augment=augment,
            shuffle=True,
            drop_remainder=True,
        )
        return train_ds, FaceBatches(x_val, train_data.y_val, batch_size=256)
    import tensorflow as tf

    random = TfRandom()
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train, w_train))
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
        .map(lambda x, y, w: (augment(x, random), y, w), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, train_data.y_val)).batch(256).prefetch(tf.data.AUTOTUNE)
    return train_ds, val_ds


def predict_probabilities(model, images: np.ndarray, flip_tta: bool = False, batch_size: int = 256) -> np.ndarray:
    """Keras-side probabilities ``float32 (N, 7)`` for ``uint8 (N, 48, 48)`` faces; ``flip_tta`` averages the
    prediction of each face and its mirror image."""
    x = images[..., None].astype(np.float32)
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    if flip_tta:
        probs = (probs + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2.0
    return probs.astype(np.float32)


def new_state() -> dict:
    """The checkpoint state of a fresh run (``checkpoints/state.json``).

    Keys: ``epoch`` (last finished, 0-based; -1 = none), ``best_val_accuracy``, ``best_epoch`` (1-based), ``wait``
    (epochs without improvement), ``history`` (one dict of Keras logs per epoch), ``wall_s`` (seconds of epochs,
    all invocations), ``total_wall_s`` (seconds of all invocations of ``train`` on the run folder, updated at
    every checkpoint so an interrupted invocation still counts up to its last epoch), ``recipe`` and ``init``.
    """
    return {
        "epoch": -1,
        "best_val_accuracy": -1.0,
        "best_epoch": -1,
        "wait": 0,
        "history": [],
        "wall_s": 0.0,
        "total_wall_s": 0.0,
        "recipe": None,
        "init": None,
    }


def build_or_resume(
    ckpt_dir: Path,
    resume: bool,
    total_steps: int,
    steps_per_epoch: int,
    epochs: int,
    learning_rate: float,
    weight_decay: float,
    label_smoothing: float,
    stages=None,
    dense_units: int = 256,
    init: str | None = None,
    log=print,
):
    """Step 2 of ``train``: the compiled model and checkpoint state, resumed from ``ckpt_dir`` or built anew.

    A new model is built from ``stages``/``dense_units`` and, with ``init`` (a ``.keras`` file of the same
    architecture, e.g. the shipped ``inference/models/fer_cnn.keras``), starts from that file's weights (a warm
    start; the optimiser and schedule are new). The ``init`` file's card (``model_card.json`` beside it, when
    present) is recorded in the state so the new card can add up the training time of both.

    Returns:
        ``(model, state)``; ``state`` as in ``new_state``.

    Raises:
        ValueError: ``init`` holds another architecture (weight shapes differ).
    """
    from inference.model import DEFAULT_STAGES, build_model

    state_file = ckpt_dir / "state.json"
    if resume and (ckpt_dir / "last.keras").exists() and state_file.exists():
        model = keras.models.load_model(ckpt_dir / "last.keras")
        saved = json.loads(state_file.read_text())
        # A checkpoint written before ``total_wall_s`` existed only knows its finished invocations.
        state = {**new_state(), "total_wall_s": saved.get("finished_invocations_wall_s", 0.0), **saved}
        log(f"resuming after epoch {state['epoch'] + 1} (best PublicTest accuracy {state['best_val_accuracy']:.4f})")
        _reschedule(model.optimizer, total_steps, log)
        return model, state
    state = new_state()
    model = build_model(stages=tuple(stages or DEFAULT_STAGES), dense_units=dense_units, weight_decay=0.0)
    if init:
        state["init"] = warm_start(model, init)
        log(f"warm start from {init} ({state['init']['epochs_run']} epochs of training before)")
    warmup = min(2 * steps_per_epoch, epochs * steps_per_epoch // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 100,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=learning_rate,
        warmup_steps=warmup,
        alpha=0.0,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bn", "bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model, state


def card_beside(path: Path) -> dict:
    """The model card beside the model file ``path``: ``<stem>.model_card.json`` (the shipped small-face model's
    name), ``<stem>_card.json``, else ``model_card.json`` (a training run's folder, the shipped ensemble); ``{}``
    when there is none."""
    names = (f"{path.stem}.model_card.json", f"{path.stem}_card.json", "model_card.json")
    for candidate in (path.with_name(name) for name in names):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def warm_start(model, init: str) -> dict:
    """Copy the weights of the ``.keras`` file ``init`` into ``model`` (same architecture) and describe the source.

    When ``init`` is an ensemble (``inference.ensemble``), the weights come from its first member of the same
    architecture, while the numbers describe the whole file (its card's training adds up all members).

    Returns:
        ``{"path", "sha256", "epochs_run", "training_wall_time_s", "total_wall_time_s", "labels"}``; the numbers
        come from the card beside ``init`` (``card_beside``: ``<stem>.model_card.json``, ``<stem>_card.json`` or
        ``model_card.json``), ``None`` when there is no card.

    Raises:
        FileNotFoundError: no such file. ValueError: another architecture.
    """
    from inference.data import file_sha256

    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"{init}: no such model file")
    source = keras.models.load_model(path, compile=False)
    ours = [w.shape for w in model.get_weights()]
    # An ensemble (inference.ensemble, e.g. the shipped model) holds its members as nested models: start from the
    # first member of this architecture.
    candidates = [source, *(layer for layer in source.layers if isinstance(layer, keras.Model))]
    match = next((c for c in candidates if [w.shape for w in c.get_weights()] == ours), None)
    if match is None:
        raise ValueError(f"{init}: architecture differs from the model being trained (weight shapes differ)")
    model.set_weights(match.get_weights())
    card = card_beside(path)
    labels = card.get("labels", {}).get("training", "fer2013") if card else None
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "epochs_run": card.get("epochs_run_including_init", card.get("epochs_run")),
        "training_wall_time_s": card.get("training_wall_time_including_init_s", card.get("training_wall_time_s")),
        # A card's total can undercount its epochs when an invocation was interrupted before it finished (the first
        # shipped card: 1,148 s total vs 6,042 s of epochs), so the larger of the two is carried forward.
        "total_wall_time_s": max(
            card.get("total_wall_time_including_init_s", card.get("total_wall_time_s")) or 0.0,
            card.get("training_wall_time_including_init_s", card.get("training_wall_time_s")) or 0.0,
        )
        or None,
        "labels": labels,
    }


class EpochCheckpoint(keras.callbacks.Callback):
    """Step 3 of ``train``, a Keras callback: after every epoch, record the logs in ``state``, save ``last.keras``
    (atomically) and ``state.json``, save ``best.keras`` on a new best ``val_accuracy``, fold the weights into the
    running average during the last ``swa_epochs`` epochs, and stop after ``patience`` epochs without improvement.

    Args:
        state: the checkpoint state (``new_state``), updated in place.
        ckpt_dir: the ``checkpoints`` folder.
        epochs: the run's epoch budget (for the weight-average window and the log lines).
        patience: early-stopping patience in epochs.
        swa_epochs: length of the weight-average window (0: off).
        wall_base_s, started: ``state["total_wall_s"]`` when this invocation began and ``time.time()`` then.
        log: callable for progress lines.
    """

    def __init__(self, state, ckpt_dir, epochs, patience, swa_epochs, wall_base_s, started, log=print):
        super().__init__()
        self.state, self.ckpt_dir, self.epochs, self.patience = state, Path(ckpt_dir), epochs, patience
        self.swa_epochs, self.wall_base_s, self.started, self.log = swa_epochs, wall_base_s, started, log
        self._t0 = time.time()

    def on_train_begin(self, logs=None):
        self._t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        state, ckpt_dir = self.state, self.ckpt_dir
        logs = {k: float(v) for k, v in (logs or {}).items()}
        state["history"].append({"epoch": epoch + 1, **logs})
        val_acc = logs.get("val_accuracy", 0.0)
        if val_acc > state["best_val_accuracy"]:
            state.update(best_val_accuracy=val_acc, best_epoch=epoch + 1, wait=0)
            self.model.save(ckpt_dir / "best.keras")
        else:
            state["wait"] += 1
        if self.swa_epochs and epoch + 1 > self.epochs - self.swa_epochs:
            swa_accumulate(self.model, ckpt_dir / "swa.npz")
        state["epoch"] = epoch
        state["wall_s"] = state.get("wall_s", 0.0) + (time.time() - self._t0)
        state["total_wall_s"] = self.wall_base_s + (time.time() - self.started)
        self._t0 = time.time()
        self.model.save(ckpt_dir / "last.tmp.keras")
        os.replace(ckpt_dir / "last.tmp.keras", ckpt_dir / "last.keras")
        (ckpt_dir / "state.json").write_text(json.dumps(state, indent=1))
        self.log(
            f"epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f} "
            f"val_loss {logs.get('val_loss', 0):.4f} val_acc {val_acc:.4f} "
            f"(best {state['best_val_accuracy']:.4f} @ {state['best_epoch']}) {state['wall_s']:.0f}s"
        )
        if state["wait"] >= self.patience:
            self.log(f"early stopping: no PublicTest improvement for {self.patience} epochs")
            self.model.stop_training = True


def train(
    data: str,
    out: str = "runs/latest",
    epochs: int = 60,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.1,
    patience: int = 15,
    seed: int = 1337,
    resume: bool = False,
    stages=None,
    dense_units: int = 256,
    max_train_rows: int | None = None,
    precision: str = "auto",
    swa_epochs: int = 0,
    labels: str = "fer2013",
    ferplus: str | None = None,
    mix_weight: float = 0.5,
    lowres_share: float = 0.0,
    init: str | None = None,
    log=print,
    teacher: str | None = None,
    teacher_weight: float = 0.5,
    select_size: int | None = None,
) -> dict:
    """Train, checkpoint, evaluate on PublicTest, export ONNX and write the model card and plots.

    Runs under any Keras 3 backend (``KERAS_BACKEND``): TensorFlow (the locked default here) does every step;
    JAX or PyTorch train the epochs and leave the finishing steps to a TensorFlow ``--resume`` (see Returns).

    The steps: ``load_training_data`` (faces and targets), ``build_or_resume`` (model, optimiser, state),
    ``EpochCheckpoint`` (per-epoch checkpoints while Keras fits), ``finish`` (weight average, float32 copy, export,
    card).

    Args:
        data: FER2013 CSV (``.csv``/``.csv.gz``) or image-folder root; needs ``Training`` and ``PublicTest`` rows.
        out: output folder (created).
        epochs: maximum number of epochs (the cosine schedule ends here).
        batch_size, learning_rate, weight_decay, label_smoothing: optimisation settings (see module docstring).
        patience: early-stopping patience in epochs on PublicTest accuracy.
        seed: RNG seed.
        resume: continue from ``<out>/checkpoints/last.keras`` if present.
        stages, dense_units: architecture (see ``inference.model.build_model``); ``None`` = default.
        max_train_rows: use only the first N training rows (smoke tests).
        precision: ``auto``, ``float32`` or ``bfloat16`` (mixed precision), see ``resolve_precision``.
        swa_epochs: average the weights of the last this many epochs (0: off), see the module docstring.
        labels: ``fer2013``, ``ferplus`` or ``mixed`` targets, see ``make_targets``.
        ferplus: FER+ ``fer2013new.csv`` (needed for ``ferplus``/``mixed``; with ``fer2013`` it only adds FER+
            metrics to the card).
        mix_weight: weight of the FER2013 one-hot in ``mixed`` targets.
        lowres_share: share of training faces shrunk to 12..40 px and scaled back (0: off), see ``make_lowres``.
        init: ``.keras`` file to start from (warm start; ignored on ``resume`` when a checkpoint exists).
        log: callable for progress lines.
        teacher, teacher_weight: knowledge distillation from an ONNX model, see ``load_training_data``.
        select_size: validate (early stopping, checkpoint choice, weight averaging) on the PublicTest faces shrunk to
            this side in pixels and scaled back (``inference.evaluate.shrink_faces``), for a model made for small
            faces; ``None``: the 48-px faces.

    Returns:
        The model card (also written to ``<out>/model_card.json``). Under a Keras backend other than TensorFlow
        (JAX or PyTorch, e.g. on a GPU machine without TensorFlow) the run stops after the epochs and returns
        ``{"finished": False, "backend", "epoch", "best_epoch", "best_val_accuracy"}``: the same command with
        ``resume=True`` under TensorFlow finishes it from the checkpoints (``.keras`` files load under any backend).

    Raises:
        inference.data.DatasetError: unreadable data, or no ``Training``/``PublicTest`` rows.
        ValueError: an unknown ``labels`` or an ``init`` of another architecture.
    """
    from inference.model import ARCHITECTURE, count_flops

    started = time.time()
    out_dir = Path(out)
    ckpt_dir = out_dir / "checkpoints"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(exist_ok=True)

    train_data = load_training_data(data, labels, ferplus, mix_weight, max_train_rows, log, teacher, teacher_weight)
    keras.utils.set_random_seed(seed)
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    log(f"precision policy: {policy}")
    weights = class_weights(train_data.y_train.argmax(axis=1))
    train_ds, val_ds = _datasets(train_data, batch_size, seed, weights, lowres_share, select_size)
    steps_per_epoch = len(train_data.train_set) // batch_size
    if steps_per_epoch == 0:
        raise DatasetError(f"{data}: fewer training rows ({len(train_data.train_set)}) than one batch ({batch_size})")

    model, state = build_or_resume(
        ckpt_dir,
        resume,
        epochs * steps_per_epoch,
        steps_per_epoch,
        epochs,
        learning_rate,
        weight_decay,
        label_smoothing,
        stages,
        dense_units,
        init,
        log,
    )
    recipe = {
        "labels": labels,
        "mix_fer2013_weight": mix_weight if labels == "mixed" else None,
        "lowres_share": lowres_share,
        "lowres_sizes": list(LOWRES_SIZES) if lowres_share > 0 else None,
        "epochs": epochs,
        "batch_size": batch_size,
        "peak_learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "swa_epochs": swa_epochs,
        "seed": seed,
        "checkpoint_face_size": select_size or train_data.val_set.images.shape[1],
    }
    if teacher:
        recipe.update(teacher_sha256=train_data.labels["teacher_sha256"], teacher_weight=teacher_weight)
    if state.get("recipe") and state["recipe"] != recipe:
        log(f"note: resumed with another recipe than the checkpoint's: {state['recipe']} -> {recipe}")
    state["recipe"] = recipe
    log(f"model {ARCHITECTURE}: {model.count_params():,} parameters, {count_flops(model) / 1e6:.1f} MFLOPs/face")

    wall_base = state["total_wall_s"]
    backend = keras.backend.backend()
    if isinstance(train_ds, FaceBatches):
        train_ds.start_at(state["epoch"] + 1)
    if state["epoch"] + 1 < epochs and state["wait"] < patience:
        state.setdefault("invocations", []).append(
            {
                "backend": backend,
                "gpus": gpu_names(),
                "processor": _cpu_name(),
                "precision": policy,
                "first_epoch": state["epoch"] + 2,
            }
        )
        checkpoint = EpochCheckpoint(state, ckpt_dir, epochs, patience, swa_epochs, wall_base, started, log)
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            initial_epoch=state["epoch"] + 1,
            callbacks=[checkpoint],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    if backend != "tensorflow":  # the ONNX export needs TensorFlow: finish where it is installed
        log(
            f"trained with Keras's {backend} backend: the checkpoints are in {ckpt_dir}; finish the run (weight "
            "average, ONNX export, evaluation, card) where TensorFlow is installed, with the same command and --resume"
        )
        return {
            "finished": False,
            "backend": backend,
            **{k: state[k] for k in ("epoch", "best_epoch", "best_val_accuracy")},
        }
    return finish(train_data, val_ds, state, ckpt_dir, out_dir, batch_size, swa_epochs, policy, wall_base, started, log)


def finish(train_data, val_ds, state, ckpt_dir, out_dir, batch_size, swa_epochs, policy, wall_base, started, log):
    """Step 4 of ``train``: choose the best checkpoint or the weight average, save a float32 ``model.keras``, then
    ``finalize`` (export, evaluation, card, plots); records this invocation's wall time in ``state.json``.

    Returns:
        The model card.
    """
    best = keras.models.load_model(ckpt_dir / "best.keras")
    swa = None
    swa_path = ckpt_dir / "swa.npz"
    if swa_epochs and swa_path.exists():
        averaged = keras.models.load_model(ckpt_dir / "best.keras")
        swa = swa_finish(averaged, swa_path, train_data.train_set.images, val_ds, batch_size)
        swa["used"] = swa["val_accuracy"] > state["best_val_accuracy"]
        log(
            f"weight average of {swa['epochs_averaged']} epochs: PublicTest accuracy {swa['val_accuracy']:.4f} vs best "
            f"checkpoint {state['best_val_accuracy']:.4f}; serving the {'average' if swa['used'] else 'checkpoint'}"
        )
        if swa["used"]:
            best = averaged
    best = to_float32(best)  # a fresh, uncompiled float32 copy: saved without optimiser state
    keras.mixed_precision.set_global_policy("float32")
    best.save(out_dir / "model.keras")
    state["finished_invocations_wall_s"] = wall_base
    card = finalize(
        best,
        train_data.public_test,
        train_data.dataset.sha256,
        state,
        out_dir,
        started,
        log=log,
        precision=policy,
        swa=swa,
        labels=train_data.labels,
        public_test_votes=train_data.public_test_votes,
    )
    state["total_wall_s"] = card["total_wall_time_s"]
    state["finished_invocations_wall_s"] = card["total_wall_time_s"]
    (ckpt_dir / "state.json").write_text(json.dumps(state, indent=1))
    return card


def swa_accumulate(model, path: Path) -> int:
    """Fold ``model``'s current weights into the running mean stored in ``path`` (``.npz``); returns the new count.

    The file holds ``count`` and one float32 array per weight (``w0``, ``w1``, ...), written atomically.
    """
    weights = model.get_weights()
    count = 0
    if path.exists():
        with np.load(path) as saved:
            count = int(saved["count"])
            mean = [saved[f"w{i}"] for i in range(len(weights))]
    if count == 0:
        mean = [w.astype(np.float32) for w in weights]
    else:
        mean = [m + (w - m) / (count + 1) for m, w in zip(mean, weights, strict=True)]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, count=count + 1, **{f"w{i}": m.astype(np.float32) for i, m in enumerate(mean)})
    os.replace(tmp, path)
    return count + 1


def swa_finish(model, path: Path, train_images: np.ndarray, val_ds, batch_size: int) -> dict:
    """Load the averaged weights from ``path`` into ``model``, recompute its batch-norm statistics and evaluate it.

    Batch-norm moving statistics of averaged weights are stale, so one pass of ``model(x, training=True)`` over the
    un-augmented training faces (``uint8 (N, 48, 48)``, shuffled, ``batch_size`` per step) re-estimates them
    (momentum 0.99: after N / batch_size >= 300 steps the old statistics weigh < 5 %).

    Returns:
        ``{"epochs_averaged": int, "val_accuracy": float}`` (accuracy on ``val_ds``).
    """
    with np.load(path) as saved:
        count = int(saved["count"])
        model.set_weights([saved[f"w{i}"] for i in range(len(model.get_weights()))])
    order = np.random.default_rng(0).permutation(len(train_images))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = train_images[order[start : start + batch_size]][..., None].astype(np.float32)
        model(batch, training=True)
    _, accuracy = model.evaluate(val_ds, verbose=0)
    return {"epochs_averaged": count, "val_accuracy": float(accuracy)}


def _reschedule(optimizer, total_steps: int, log=print) -> None:
    """On ``--resume`` with another ``--epochs``, stretch or shrink the cosine schedule so that it still ends at the
    last epoch (the warm-up and peak are kept; the step counter continues)."""
    import keras

    schedule = optimizer._learning_rate
    if not isinstance(schedule, keras.optimizers.schedules.CosineDecay):
        return
    config = schedule.get_config()
    decay_steps = max(1, total_steps - int(config.get("warmup_steps") or 0))
    if decay_steps != config["decay_steps"]:
        config["decay_steps"] = decay_steps
        optimizer.learning_rate = keras.optimizers.schedules.CosineDecay.from_config(config)
        log(f"learning-rate schedule now ends after {total_steps} steps")


def finalize(
    model,
    val_set,
    data_sha256: str,
    state: dict,
    out_dir: Path,
    started: float,
    log=print,
    precision="float32",
    swa: dict | None = None,
    labels: dict | None = None,
    public_test_votes: np.ndarray | None = None,
) -> dict:
    """Evaluate ``model`` on PublicTest, export and check ONNX, write model card, history and plots.

    The card's ``evaluation`` holds ``inference.evaluate.evaluate_faces`` of the exported ONNX model on all of
    ``val_set`` (``PublicTest``) as served (``flip_tta``) and in one pass (``one_pass``): FER2013-label metrics,
    accuracy at ``CARD_SIZES`` face sides, calibration and, with ``public_test_votes``, the FER+ metrics. Wall
    times: ``training_wall_time_s`` (epochs of all invocations on this run folder), ``total_wall_time_s`` (all
    invocations, loading, evaluation and export included) and, after a warm start (``state["init"]``), both
    ``*_including_init_s`` with the training time of the model started from.
    """
    import tensorflow as tf

    from inference.evaluate import CARD_SIZES, evaluate_faces
    from inference.export import export_onnx
    from inference.metrics import classification_report
    from inference.model import ARCHITECTURE, count_flops

    onnx_path = out_dir / "model.onnx"
    max_abs_diff = export_onnx(model, onnx_path, check_images=val_set.images[:256])
    log(f"exported {onnx_path} (max |ONNX - Keras| = {max_abs_diff:.2e})")
    from inference.classifier import EmotionClassifier

    clf = EmotionClassifier(onnx_path, flip_tta=False)
    probs = clf.predict_proba(val_set.images)
    report = classification_report(val_set.labels, probs.argmax(1))
    probs_flip = (probs + clf.predict_proba(val_set.images[:, :, ::-1].copy())) / 2
    report_tta = classification_report(val_set.labels, probs_flip.argmax(1))
    log(f"PublicTest accuracy {report['accuracy']:.4f} (flip TTA {report_tta['accuracy']:.4f})")
    evaluation = {
        name: evaluate_faces(
            EmotionClassifier(onnx_path, threads=os.cpu_count() or 1, flip_tta=tta),
            val_set.images,
            val_set.labels,
            public_test_votes,
            CARD_SIZES,
            calibration=True,
        )
        for name, tta in (("flip_tta", True), ("one_pass", False))
    }
    served = evaluation["flip_tta"]
    log(
        "as served: "
        + ", ".join(f"{s} px {v['accuracy']:.4f}" for s, v in served["sizes"].items())
        + f"; ECE {served['calibration']['ece']:.4f}"
        + (f"; FER+ majority {served['ferplus']['accuracy']:.4f}" if "ferplus" in served else "")
    )
    init = state.get("init") or None
    total_wall = round(state.get("finished_invocations_wall_s", 0.0) + time.time() - started, 1)

    history = state["history"]
    with open(out_dir / "history.csv", "w", newline="") as fh:
        if history:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    card = {
        "architecture": ARCHITECTURE,
        "layers": [layer.__class__.__name__ + ":" + layer.name for layer in model.layers],
        "input": {"shape": [None, 48, 48, 1], "dtype": "float32", "range": "grey levels 0..255"},
        "output": {"shape": [None, NUM_CLASSES], "dtype": "float32", "labels": list(LABELS)},
        "parameters": int(model.count_params()),
        "flops_per_face": count_flops(model),
        "data": {"source": Path(val_set.source).name, "sha256": data_sha256, "validation_split": "PublicTest"},
        "epochs_run": len(history),
        "best_epoch": state.get("best_epoch"),
        "training_wall_time_s": round(state.get("wall_s", 0.0), 1),
        # Wall time of every invocation of ``train`` on this run folder (resumes add up), data loading,
        # evaluation and export included; ``training_wall_time_s`` counts the epochs alone.
        "total_wall_time_s": total_wall,
        "labels": labels or {"training": "fer2013"},
        "recipe": state.get("recipe"),
        "init": init,
        "epochs_run_including_init": len(history) + ((init or {}).get("epochs_run") or 0),
        "training_wall_time_including_init_s": round(
            state.get("wall_s", 0.0) + ((init or {}).get("training_wall_time_s") or 0.0), 1
        ),
        "total_wall_time_including_init_s": round(total_wall + ((init or {}).get("total_wall_time_s") or 0.0), 1),
        "hardware": {
            "machine": platform.machine(),
            "processor": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "gpus": gpu_names(),
        },
        # Where the epochs ran (each invocation that trained: Keras backend, GPUs, CPU, precision, first epoch).
        "invocations": state.get("invocations", []),
        "training_precision": precision,
        "weight_averaging": swa,
        "software": {"tensorflow": tf.__version__, "python": platform.python_version()},
        "onnx_max_abs_diff_vs_keras": max_abs_diff,
        "public_test": {k: report[k] for k in ("n", "accuracy", "macro_f1", "per_class", "confusion")},
        "public_test_flip_tta": {k: report_tta[k] for k in ("n", "accuracy", "macro_f1")},
        "evaluation": evaluation,
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    _plots(history, report, out_dir)
    return card


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _plots(history: list[dict], report: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "train"), ("val_loss", "PublicTest")):
        ax1.plot(epochs, [h.get(key, np.nan) for h in history], label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "PublicTest")):
        ax2.plot(epochs, [h.get(key, np.nan) for h in history], label=label)
    ax1.set(title="loss", xlabel="epoch")
    ax2.set(title="accuracy", xlabel="epoch")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=100)
    plt.close(fig)

    cm = np.asarray(report["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(NUM_CLASSES), LABELS, rotation=45)
    ax.set_yticks(range(NUM_CLASSES), LABELS)
    ax.set(xlabel="predicted", ylabel="true", title=f"PublicTest confusion (acc {report['accuracy']:.3f})")
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=100)
    plt.close(fig)
