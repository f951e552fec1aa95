"""Quantise an exported emotion model to int8 for serving (a maintainer's tool; the product only loads the result).

    .venv/bin/python scripts/quantize_classifier.py [MODEL.onnx] [--data fer2013.csv.gz] [--max-drop 0.3]

Works for any model written by ``inference/export.py`` (input ``face`` ``float32 (N, 48, 48, 1)`` grey levels
0..255, output ``(N, 7)`` probabilities). Steps:

1. calibrate on ``--calibration-rows`` faces spread evenly over the FER2013 ``Training`` split;
2. static int8 quantisation with ONNX Runtime (``onnxruntime.quantization.quantize_static``: QDQ format, uint8
   activations, int8 per-channel weights with ``reduce_range`` (7-bit weights: without it the uint8 x int8 products
   saturate on CPUs without VNNI, measured: 30 % of argmax decisions changed on this AVX2 machine; README
   "Benchmark" has the variants tried);
3. compare PublicTest accuracy of the float and int8 models, both as served (flip TTA); if the int8 model is more
   than ``--max-drop`` points worse, write nothing and exit 1;
   (the final ``Softmax``, and an ensemble's mean of its members' probabilities, stay float, so probabilities
   still sum to 1);
4. write ``<model>.int8.onnx`` beside the model with the float file's SHA-256 in its metadata
   (``source_sha256``). ``inference.classifier.EmotionClassifier`` serves that file instead of the float one only
   while the hash matches, so a re-exported model is served in float until this script is run again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared/data/fer2013/fer2013_train_val.csv.gz"


def main() -> int:
    from inference.classifier import EmotionClassifier, default_model_path, quantized_path
    from inference.data import file_sha256, load_fer2013

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(default_model_path()), help="float ONNX model")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="FER2013 CSV (Training and PublicTest rows)")
    parser.add_argument("--calibration-rows", type=int, default=1024)
    parser.add_argument("--max-drop", type=float, default=0.3, help="largest PublicTest accuracy loss, points")
    args = parser.parse_args()

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = Path(args.model)
    train = load_fer2013(args.data, usage="Training")
    pick = np.linspace(0, len(train) - 1, args.calibration_rows).round().astype(int)
    calibration = train.images[pick][..., None].astype(np.float32)
    graph = onnx.load(str(model)).graph
    input_name = graph.input[0].name
    # probabilities stay float: a quantised Softmax output moves in steps of 1/255 and rows no longer sum to 1;
    # so does everything computed from them (an ensemble's mean of its members' probabilities)
    softmax = [node.name for node in graph.node if node.op_type == "Softmax"]
    float_tensors = {out for node in graph.node if node.op_type == "Softmax" for out in node.output}
    for node in graph.node:  # nodes are in topological order
        if node.op_type != "Softmax" and float_tensors.intersection(node.input):
            softmax.append(node.name)
            float_tensors.update(node.output)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(calibration[i : i + 64] for i in range(0, len(calibration), 64))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    out = quantized_path(model)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            nodes_to_exclude=softmax,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        q = onnx.load(str(quantized))
        entry = q.metadata_props.add()
        entry.key, entry.value = "source_sha256", file_sha256(model)
        onnx.save(q, str(quantized))

        test = load_fer2013(args.data, usage="PublicTest")
        accuracy = {}
        for name, path in (("float", model), ("int8", quantized)):
            clf = EmotionClassifier(path, threads=1, flip_tta=True, quantized=False)
            accuracy[name] = float((clf.predict_proba(test.images).argmax(axis=1) == test.labels).mean())
        drop = 100 * (accuracy["float"] - accuracy["int8"])
        print(
            f"PublicTest accuracy (flip TTA, {len(test)} faces): float {accuracy['float']:.4f}, "
            f"int8 {accuracy['int8']:.4f} ({drop:+.2f} points lost)"
        )
        if drop > args.max_drop:
            print(f"int8 model loses more than {args.max_drop} points: not written", file=sys.stderr)
            return 1
        out.write_bytes(quantized.read_bytes())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
