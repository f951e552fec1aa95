"""Export of the trained Keras model to ONNX for serving with ONNX Runtime (no TensorFlow in workers).

The export is checked: ONNX Runtime's probabilities on real faces must match Keras's within ``atol`` (1e-4).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class ExportMismatchError(RuntimeError):
    """The exported ONNX model's outputs differ from Keras's by more than the tolerance."""


def export_onnx(model, path: str | os.PathLike, check_images: np.ndarray | None = None, atol: float = 1e-4) -> float:
    """Write ``model`` as ONNX (opset 17) with input ``face`` ``float32 (N, 48, 48, 1)`` and output
    ``probabilities`` ``float32 (N, 7)``, then compare ONNX Runtime with Keras.

    Args:
        model: a Keras 3 model (TensorFlow backend) as built by ``inference.model.build_model``.
        path: destination ``.onnx`` file (parent folders are created).
        check_images: ``uint8 (N, 48, 48)`` faces to compare on (default: 64 random images with a fixed seed).
        atol: largest allowed absolute difference of any probability.

    Returns:
        The largest absolute difference observed (float).

    Raises:
        ExportMismatchError: the difference exceeds ``atol`` (the file is removed).
    """
    import tensorflow as tf
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.input_shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, name="face")])
    def serve(face):
        return {"probabilities": model(face, training=False)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17)
    model_proto.doc_string = f"FER2013 emotion CNN ({model.name}); input grey 0..255, output probabilities"
    tmp = path.with_suffix(".tmp.onnx")
    tmp.write_bytes(model_proto.SerializeToString())
    os.replace(tmp, path)

    if check_images is None:
        check_images = np.random.default_rng(0).integers(0, 256, (64, size, size), dtype=np.uint8)
    x = check_images[..., None].astype(np.float32)
    expected = model.predict(x, batch_size=256, verbose=0)

    from inference.classifier import EmotionClassifier

    got = EmotionClassifier(path, flip_tta=False).predict_proba(check_images)
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        path.unlink(missing_ok=True)
        raise ExportMismatchError(f"ONNX export differs from Keras by {diff:.2e} > {atol:.0e}")
    return diff
