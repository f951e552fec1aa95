"""Rebuild ``inference/models/blazeface_short_range.onnx`` from the MediaPipe wheel (a maintainer's tool, not run
by the product: the converted file ships in the repo).

    .venv/bin/python scripts/convert_blazeface.py [--wheel mediapipe-0.10.21-...whl]

Without ``--wheel`` it runs ``pip download --no-deps mediapipe==0.10.21`` (PyPI only). Steps:

1. take ``mediapipe/modules/face_detection/face_detection_short_range.tflite`` and the wheel's Apache-2.0 LICENSE;
2. convert the TFLite graph to ONNX (opset 17) with ``tf2onnx.convert.from_tflite``;
3. make the batch dimension dynamic (the two output ``Reshape`` shapes ``[1, -1, k]`` become ``[0, -1, k]``), so
   one ONNX Runtime call can take several windows, and the input height and width free (the network is fully
   convolutional: an ``H x W`` input, sides multiples of 16, gives ``H/8 * W/8 * 2 + H/16 * W/16 * 6`` anchors,
   see ``inference.detector._blazeface_anchors``), so a whole pyramid level runs as one call;
4. check the ONNX outputs against the TFLite interpreter on real photo tiles and on noise (max abs difference
   <= 1e-4 of each output's scale, ``max(1, max |TFLite output|)``, else exit 1);
5. write ``inference/models/blazeface_short_range.onnx`` and ``inference/models/BLAZEFACE_LICENSE``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "inference/models"
TFLITE = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
VERSION = "0.10.21"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help=f"mediapipe {VERSION} wheel (default: pip download it)")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else None
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"mediapipe=={VERSION}", "-d", tmp],
                check=True,
            )
            wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            tflite = Path(tmp) / "blazeface.tflite"
            tflite.write_bytes(zf.read(TFLITE))
            licence = next(n for n in zf.namelist() if n.endswith(".dist-info/LICENSE"))
            licence_text = zf.read(licence).decode()

        model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=17)
        for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[:3], ("N", "H", "W"), strict=True):
            dim.dim_param = name
        for output in model.graph.output:
            output.type.tensor_type.shape.dim[0].dim_param = "N"
            output.type.tensor_type.shape.dim[1].dim_param = "anchors"
        reshape_shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
        for init in model.graph.initializer:
            if init.name in reshape_shapes:
                shape = numpy_helper.to_array(init).copy()
                if shape[0] == 1:
                    shape[0] = 0  # copy the batch dimension from the input
                init.CopyFrom(numpy_helper.from_array(shape, init.name))
        del model.graph.value_info[:]
        onnx.checker.check_model(model)

        interpreter = tf.lite.Interpreter(model_path=str(tflite))
        interpreter.allocate_tensors()
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        tiles = [np.random.default_rng(0).uniform(-1, 1, (128, 128, 3)).astype(np.float32)]
        for photo in sorted((REPO.parent / "shared/data/faces").glob("*/*.jpg")):
            rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
            tiles.append(cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1)
        batch = np.stack(tiles)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": batch}), strict=True))
        worst = {"regressors": 0.0, "classificators": 0.0}
        for i, tile in enumerate(tiles):
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tile[None])
            interpreter.invoke()
            for detail in interpreter.get_output_details():
                name = "regressors" if detail["shape"][-1] == 16 else "classificators"
                expected = interpreter.get_tensor(detail["index"])[0]
                # relative to the output's scale: regressors are offsets in input pixels (up to ~128)
                error = np.abs(expected - got[name][i]).max() / max(1.0, float(np.abs(expected).max()))
                worst[name] = max(worst[name], float(error))
        print(f"max |ONNX - TFLite| / max(1, |TFLite|) over {len(tiles)} tiles: {worst}")
        wide = session.run(None, {"input": np.zeros((1, 480, 640, 3), np.float32)})
        if wide[0].shape != (1, 60 * 80 * 2 + 30 * 40 * 6, 16):
            print(f"free input size check failed: {wide[0].shape}", file=sys.stderr)
            return 1
        if max(worst.values()) > 1e-4:
            print("conversion check failed", file=sys.stderr)
            return 1
        MODELS.mkdir(parents=True, exist_ok=True)
        onnx.save(model, MODELS / "blazeface_short_range.onnx")
        (MODELS / "BLAZEFACE_LICENSE").write_text(
            f"blazeface_short_range.onnx is converted from {TFLITE} in the mediapipe=={VERSION} wheel (PyPI)\n"
            "by scripts/convert_blazeface.py. MediaPipe's licence follows.\n\n" + licence_text
        )
        print(f"wrote {MODELS / 'blazeface_short_range.onnx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
