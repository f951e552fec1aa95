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
    fold_input_rescale(model_proto)
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


def fold_input_rescale(model_proto) -> bool:
    """Fold the model's input rescaling (``Rescaling`` layer: ``x * a + b``) into its first convolution, in place.

    tf2onnx exports the rescaling as ``Mul`` + ``Add`` on the whole input, which costs about 8 % of a forward pass
    on one CPU thread (ONNX Runtime profile of the shipped model at batch 32). Convolution is linear, so
    ``conv(pad0(a*x + b), W) + B == conv(padv(x), a*W) + B + b*sum(W)`` where ``padv`` pads with ``v = -b/a`` (the
    raw grey level that rescales to the zero the original padding inserts): the rewrite is exact, not an
    approximation. Graph pattern matched: ``Mul(input, scalar) -> Add(scalar) -> Reshape -> Conv`` (one or more
    convolutions with their own weights, as in an ensemble whose members share the rescale); any other graph is
    left as it is.

    Args:
        model_proto: ``onnx.ModelProto`` as produced by tf2onnx.

    Returns:
        True when the graph was rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    nodes = list(graph.node)
    inits = {init.name: init for init in graph.initializer}
    if len(nodes) < 4 or [n.op_type for n in nodes[:3]] != ["Mul", "Add", "Reshape"]:
        return False
    mul, add, reshape = nodes[:3]

    def consumers(name: str) -> list:
        return [n for n in nodes if name in n.input]

    # An ensemble's members share the rescale ops (tf2onnx merges identical ones): every convolution fed by them
    # is folded, and the graph is left alone unless all of their consumers are such convolutions.
    convs = consumers(reshape.output[0])
    if (
        mul.input[0] != graph.input[0].name
        or add.input[0] != mul.output[0]
        or reshape.input[0] != add.output[0]
        or consumers(mul.output[0]) != [add]
        or consumers(add.output[0]) != [reshape]
        or not convs
        or not all(name in inits for name in (mul.input[1], add.input[1]))
    ):
        return False
    for conv in convs:
        attrs = {at.name: at for at in conv.attribute}
        if (
            conv.op_type != "Conv"
            or conv.input[0] != reshape.output[0]
            or not all(name in inits for name in conv.input[1:3])
            or sum(name in c.input for c in nodes for name in conv.input[1:3]) != len(conv.input[1:3])
            or "auto_pad" in attrs
            or int(attrs["group"].i) != 1
        ):
            return False
    a_array = numpy_helper.to_array(inits[mul.input[1]])
    b_array = numpy_helper.to_array(inits[add.input[1]])
    if a_array.size != 1 or b_array.size != 1 or float(a_array) == 0.0:
        return False
    a, b = float(a_array), float(b_array)
    reshape.input[0] = graph.input[0].name
    pad_nodes = []
    for index, conv in enumerate(convs):
        suffix = "" if index == 0 else f"_{index}"
        attrs = {at.name: at for at in conv.attribute}
        weights = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        if len(conv.input) < 3:  # a convolution without bias gets one (the fold adds b * sum(W))
            bias_init = numpy_helper.from_array(np.zeros(weights.shape[0], np.float32), f"rescale_fold_bias{suffix}")
            graph.initializer.append(bias_init)
            inits[bias_init.name] = graph.initializer[-1]
            conv.input.append(bias_init.name)
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * 4
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array((weights * a).astype(np.float32), conv.input[1]))
        inits[conv.input[2]].CopyFrom(
            numpy_helper.from_array((bias + b * weights.sum(axis=(1, 2, 3))).astype(np.float32), conv.input[2])
        )
        if any(pads):
            h0, w0, h1, w1 = pads
            graph.initializer.extend(
                [
                    numpy_helper.from_array(
                        np.array([0, 0, h0, w0, 0, 0, h1, w1], np.int64), f"rescale_fold_pads{suffix}"
                    ),
                    numpy_helper.from_array(np.array(-b / a, np.float32), f"rescale_fold_value{suffix}"),
                ]
            )
            pad = helper.make_node(
                "Pad",
                [reshape.output[0], f"rescale_fold_pads{suffix}", f"rescale_fold_value{suffix}"],
                [f"rescale_fold_padded{suffix}"],
                mode="constant",
                name=f"rescale_fold_pad{suffix}",
            )
            conv.input[0] = f"rescale_fold_padded{suffix}"
            attrs["pads"].ints[:] = [0, 0, 0, 0]
            pad_nodes.append(pad)
    del graph.node[:]
    graph.node.extend([reshape, *pad_nodes, *nodes[3:]])
    used = {name for n in graph.node for name in n.input}
    for name in (mul.input[1], add.input[1]):
        if name not in used:
            graph.initializer.remove(inits[name])
    onnx.checker.check_model(model_proto)
    return True
