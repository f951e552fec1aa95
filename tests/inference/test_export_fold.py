"""The exact rescale fold of ``inference.export`` on a real tf2onnx graph of the shipped architecture."""

import numpy as np
import pytest

from inference.export import fold_input_rescale


def _exported(model):
    """``model`` exported by tf2onnx as ``inference.export`` does, unfolded: ``(graph to fold, untouched copy)``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    @tf.function(input_signature=[tf.TensorSpec([None, 48, 48, 1], tf.float32, name="face")])
    def serve(face):
        return {"probabilities": model(face, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17)
    before = onnx.ModelProto()
    before.CopyFrom(proto)
    return proto, before


def _largest_output_difference(before, after) -> float:
    """Largest |difference| of two ONNX graphs' outputs on random faces whose borders are 0 and 255 (border pixels
    matter most: they exercise the padding value)."""
    import onnxruntime as ort

    x = np.random.default_rng(0).integers(0, 256, (16, 48, 48, 1)).astype(np.float32)
    x[:, 0, :, :] = 0
    x[:, :, -1, :] = 255
    outputs = []
    for model in (before, after):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    return float(np.abs(outputs[0] - outputs[1]).max())


@pytest.mark.slow
def test_fold_input_rescale_is_exact_and_removes_the_rescale_ops(tmp_path):

    from inference.model import build_model

    model = build_model(stages=((8, 1), (16, 1)), dense_units=16)
    # Non-trivial batch-norm statistics so the first convolution's bias matters.
    model.predict(np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32), verbose=0)

    proto, before = _exported(model)
    assert fold_input_rescale(proto) is True
    ops = [n.op_type for n in proto.graph.node]
    assert "Mul" not in ops[:3] and "Add" not in ops[:3] and ops[:3] == ["Reshape", "Pad", "Conv"]

    assert _largest_output_difference(before, proto) < 1e-5
    # A graph without the pattern is left alone.
    assert fold_input_rescale(proto) is False


@pytest.mark.slow
def test_fold_input_rescale_folds_every_member_of_an_ensemble_that_shares_the_rescale():
    import keras

    from inference.ensemble import build_ensemble
    from inference.model import build_model

    members = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        members.append(build_model(stages=((8, 1), (16, 1)), dense_units=16))
    model = build_ensemble(members)

    proto, before = _exported(model)
    assert [n.op_type for n in proto.graph.node[:3]] == ["Mul", "Add", "Reshape"]  # one rescale for both members
    assert fold_input_rescale(proto) is True
    ops = [n.op_type for n in proto.graph.node]
    assert "Mul" not in ops[:4] and "Add" not in ops[:4] and ops.count("Pad") == 2

    assert _largest_output_difference(before, proto) < 1e-5
