"""Rebuild ``inference/models/mtcnn_{pnet,rnet,onet}.onnx`` from the mtcnn wheel (a maintainer's tool, not run by
the product: the converted files ship in the repo).

    PYTHONPATH=. .venv/bin/python scripts/convert_mtcnn.py [--wheel mtcnn-1.0.0-py3-none-any.whl | unpacked/]

MTCNN is Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks"
(arXiv:1604.02878); the weights are those of the MIT-licensed ``mtcnn==1.0.0`` wheel (PyPI, Iván de Paz Centeno),
``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``. Without ``--wheel`` it runs ``pip download --no-deps mtcnn==1.0.0``
(PyPI only); ``--wheel`` may also name a folder the wheel was unpacked into (the one holding ``mtcnn/``).

Needs, besides the product's packages: ``joblib`` and ``lz4`` (the weight archives are joblib pickles compressed
with lz4) and ``tensorflow`` (the check runs the wheel's own Keras networks, imported from the wheel, which is put
on ``sys.path``). These are tools of this script only, not product dependencies: e.g. ``pip install --target
/tmp/mtcnn/deps joblib lz4`` and run with ``PYTHONPATH=.:/tmp/mtcnn/deps``. Steps:

1. load the three weight lists (Keras ``get_weights()`` order: kernel ``(kh, kw, in, out)``, bias, PReLU alpha);
2. build each network as an ONNX graph (opset 17) with ``onnx.helper``: input ``float32`` NHWC (``(x - 127.5) /
   128`` RGB), free batch (and free height and width for the fully convolutional PNet), a ``Transpose`` to NCHW,
   ``Conv``, ``PRelu`` (one slope per channel), ``MaxPool`` with ``SAME_UPPER`` for Keras ``padding="same"`` (the
   extra row/column at the end, so output sides are ``ceil(in / stride)`` as in TensorFlow) or no padding for
   ``"valid"``; RNet and ONet then ``Transpose`` to ``(N, W, H, C)`` before ``Flatten`` (the Keras ``Permute((2, 1,
   3))`` the weights were converted with), ``Gemm`` and ``Softmax``. Outputs: PNet ``offsets (N, h, w, 4)`` and
   ``probabilities (N, h, w, 2)`` with ``h = ceil((H - 2) / 2) - 4`` (likewise ``w``), RNet ``offsets (N, 4)``,
   ``probabilities (N, 2)``, ONet ``offsets (N, 4)``, ``landmarks (N, 10)``, ``probabilities (N, 2)`` (column 1:
   face);
3. check each against the wheel's TensorFlow network with the same weights on real face patches (faces found by
   ``BlazeFaceDetector`` in ``shared/data/faces``, resized to the network input), on whole photos of odd and even
   sides (PNet) and on uniform noise: max abs difference <= 1e-4 on every output, else exit 1;
4. write the three ONNX files and ``inference/models/MTCNN_LICENSE`` (the wheel's MIT licence).
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
FACES = REPO.parent / "shared/data/faces"
VERSION = "1.0.0"
OPSET = 17
TOLERANCE = 1e-4

# Layer lists of the three networks (mtcnn/network/*.py of the wheel): ("conv", name, stride 1), ("prelu", name),
# ("pool", kernel, stride, "same" | "valid"), ("flatten",), ("dense", name), ("out", name, softmax?). The weights
# come in this order, one kernel + bias per conv/dense, one alpha per prelu.
PNET = [
    ("conv", "conv1"),
    ("prelu", "prelu1"),
    ("pool", 2, 2, "same"),
    ("conv", "conv2"),
    ("prelu", "prelu2"),
    ("conv", "conv3"),
    ("prelu", "prelu3"),
    ("out", "offsets", False),
    ("out", "probabilities", True),
]
RNET = [
    ("conv", "conv1"),
    ("prelu", "prelu1"),
    ("pool", 3, 2, "same"),
    ("conv", "conv2"),
    ("prelu", "prelu2"),
    ("pool", 3, 2, "valid"),
    ("conv", "conv3"),
    ("prelu", "prelu3"),
    ("flatten",),
    ("dense", "fc4"),
    ("prelu", "prelu4"),
    ("out", "offsets", False),
    ("out", "probabilities", True),
]
ONET = [
    ("conv", "conv1"),
    ("prelu", "prelu1"),
    ("pool", 3, 2, "same"),
    ("conv", "conv2"),
    ("prelu", "prelu2"),
    ("pool", 3, 2, "valid"),
    ("conv", "conv3"),
    ("prelu", "prelu3"),
    ("pool", 2, 2, "same"),
    ("conv", "conv4"),
    ("prelu", "prelu4"),
    ("flatten",),
    ("dense", "fc5"),
    ("prelu", "prelu5"),
    ("out", "offsets", False),
    ("out", "landmarks", False),
    ("out", "probabilities", True),
]
NETWORKS = {"pnet": (PNET, None), "rnet": (RNET, 24), "onet": (ONET, 48)}


def build_graph(name: str, layers: list[tuple], weights: list[np.ndarray], side: int | None):
    """ONNX model of one network from its layer list and Keras weights (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = list(weights)
    nodes, inits = [], []
    counter = iter(range(1000))

    def const(array: np.ndarray, label: str) -> str:
        tensor_name = f"{label}_{next(counter)}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), tensor_name))
        return tensor_name

    def node(op: str, inputs: list[str], label: str, output: str | None = None, **attrs) -> str:
        out = output or f"{label}_{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    x = node("Transpose", ["input"], "nchw", perm=[0, 3, 1, 2])
    trunk = x
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            kernel, bias = weights.pop(0), weights.pop(0)
            w = const(kernel.transpose(3, 2, 0, 1), f"{layer[1]}_w")  # HWIO -> OIHW
            trunk = node(
                "Conv", [trunk, w, const(bias, f"{layer[1]}_b")], layer[1], kernel_shape=list(kernel.shape[:2])
            )
        elif kind == "prelu":
            alpha = weights.pop(0)
            # (1, 1, C) -> (C, 1, 1) for NCHW maps; (C,) stays for (N, C) features
            slope = alpha.reshape(-1, 1, 1) if alpha.ndim == 3 else alpha
            trunk = node("PRelu", [trunk, const(slope, f"{layer[1]}_alpha")], layer[1])
        elif kind == "pool":
            _, k, s, padding = layer
            pad = {"auto_pad": "SAME_UPPER"} if padding == "same" else {"auto_pad": "VALID"}
            trunk = node("MaxPool", [trunk], "pool", kernel_shape=[k, k], strides=[s, s], **pad)
        elif kind == "flatten":
            # Keras Permute((2, 1, 3)) on NHWC gives (N, W, H, C); from NCHW that is perm (0, 3, 2, 1)
            trunk = node("Transpose", [trunk], "permute", perm=[0, 3, 2, 1])
            trunk = node("Flatten", [trunk], "flatten", axis=1)
        elif kind == "dense":
            kernel, bias = weights.pop(0), weights.pop(0)
            trunk = node("Gemm", [trunk, const(kernel, f"{layer[1]}_w"), const(bias, f"{layer[1]}_b")], layer[1])
        elif kind == "out":
            _, out_name, softmax = layer
            kernel, bias = weights.pop(0), weights.pop(0)
            last = None if softmax else out_name  # the graph output is the last node's
            if side is None:  # PNet: 1x1 convolution, back to NHWC
                y = node("Conv", [trunk, const(kernel.transpose(3, 2, 0, 1), "w"), const(bias, "b")], out_name)
                y = node("Transpose", [y], out_name, output=last, perm=[0, 2, 3, 1])
            else:
                y = node("Gemm", [trunk, const(kernel, "w"), const(bias, "b")], out_name, output=last)
            if softmax:
                node("Softmax", [y], out_name, output=out_name, axis=-1)
    if weights:
        raise ValueError(f"{name}: {len(weights)} weight arrays left over: the layer list does not match the weights")

    dims: list = ["N", side or "H", side or "W", 3]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)]
    out_dims = {"offsets": 4, "landmarks": 10, "probabilities": 2}
    outputs = []
    for layer in layers:
        if layer[0] == "out":
            shape = ["N", "h", "w", out_dims[layer[1]]] if side is None else ["N", out_dims[layer[1]]]
            outputs.append(helper.make_tensor_value_info(layer[1], TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, f"mtcnn_{name}", inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="scripts/convert_mtcnn.py",
        doc_string=f"MTCNN {name.upper()} (Zhang et al. 2016, arXiv:1604.02878), weights of mtcnn=={VERSION} (MIT)",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def face_patches(side: int) -> list[np.ndarray]:
    """Real face patches ``float32 (side, side, 3)`` normalised as MTCNN expects: square crops around the faces
    ``BlazeFaceDetector`` finds in ``shared/data/faces`` (plus shifted and enlarged crops, as the cascade sees)."""
    from inference.detector import BlazeFaceDetector

    detector = BlazeFaceDetector()
    patches = []
    for photo in sorted(FACES.glob("*/*.jpg")):
        bgr = cv2.imread(str(photo))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
        for x, y, w, h in detector.detect(bgr)[:12]:
            for grow, shift in ((1.0, 0.0), (1.3, 0.1)):
                s = max(w, h) * grow
                cx, cy = x + w / 2 + shift * s, y + h / 2
                scale = side / s
                affine = np.array([[scale, 0, side / 2 - scale * cx], [0, scale, side / 2 - scale * cy]], np.float32)
                patch = cv2.warpAffine(rgb, affine, (side, side), flags=cv2.INTER_LINEAR, borderValue=(127.5,) * 3)
                patches.append((patch - 127.5) / 128)
    return patches


def tf_network(name: str, weights: list[np.ndarray]):
    """The wheel's Keras network ``name`` with ``weights`` (the wheel must be importable as ``mtcnn``)."""
    from mtcnn.network.onet import ONet
    from mtcnn.network.pnet import PNet
    from mtcnn.network.rnet import RNet

    net = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    net.build()
    net.set_weights(weights)
    return net


def compare(name: str, model, weights: list[np.ndarray], side: int | None) -> float:
    """Largest ``|ONNX - TensorFlow|`` over every output on real and random inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    net = tf_network(name, weights)
    rng = np.random.default_rng(0)
    batches = []
    if side is None:
        for photo in sorted(FACES.glob("*/*.jpg"))[:8]:
            rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB).astype(np.float32)
            scale = 160 / max(rgb.shape[:2])
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            batches.append((small[None] - 127.5) / 128)
        for h, w in ((12, 12), (13, 17), (25, 24), (97, 130)):
            batches.append(rng.uniform(-1, 1, (2, h, w, 3)).astype(np.float32))
    else:
        patches = np.stack(face_patches(side)).astype(np.float32)
        print(f"{name}: {len(patches)} real face patches")
        batches += [patches, rng.uniform(-1, 1, (16, side, side, 3)).astype(np.float32)]
    worst = 0.0
    for batch in batches:
        expected = [np.asarray(t) for t in net(batch)]
        got = session.run(None, {"input": batch})
        for e, g in zip(expected, got, strict=True):
            if e.shape != g.shape:
                raise ValueError(f"{name}: output shape {g.shape}, TensorFlow {e.shape} (input {batch.shape})")
            worst = max(worst, float(np.abs(e - g).max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", help=f"mtcnn {VERSION} wheel or unpacked wheel folder (default: pip download it)")
    args = parser.parse_args()

    import joblib
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.wheel) if args.wheel else None
        if source is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"mtcnn=={VERSION}", "-d", tmp],
                check=True,
            )
            source = next(Path(tmp).glob("mtcnn-*.whl"))
        if source.is_dir():
            root = source
        else:
            root = Path(tmp) / "wheel"
            with zipfile.ZipFile(source) as zf:
                zf.extractall(root)
        licence = next(root.glob("mtcnn-*.dist-info/LICENSE"), None)
        if licence is None or not (root / "mtcnn/assets/weights/pnet.lz4").is_file():
            print(f"{source}: not the mtcnn wheel (no LICENSE or weights)", file=sys.stderr)
            return 1
        sys.path.insert(0, str(root))  # the check imports the wheel's own Keras networks

        models = {}
        for name, (layers, side) in NETWORKS.items():
            weights = [np.asarray(w, np.float32) for w in joblib.load(root / f"mtcnn/assets/weights/{name}.lz4")]
            model = build_graph(name, layers, weights, side)
            error = compare(name, model, weights, side)
            print(f"{name}: max |ONNX - TensorFlow| = {error:.2e}")
            if not error <= TOLERANCE:
                print(f"{name}: conversion check failed (> {TOLERANCE})", file=sys.stderr)
                return 1
            models[name] = model

        MODELS.mkdir(parents=True, exist_ok=True)
        for name, model in models.items():
            onnx.save(model, MODELS / f"mtcnn_{name}.onnx")
            print(f"wrote {MODELS / f'mtcnn_{name}.onnx'}")
        (MODELS / "MTCNN_LICENSE").write_text(
            "mtcnn_pnet.onnx, mtcnn_rnet.onnx and mtcnn_onet.onnx are converted from the weights in the\n"
            f"mtcnn=={VERSION} wheel (PyPI, mtcnn/assets/weights/*.lz4) by scripts/convert_mtcnn.py. The networks are\n"
            'MTCNN: Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional\n'
            "Networks\", IEEE Signal Processing Letters 2016, arXiv:1604.02878. The wheel's MIT licence follows.\n\n"
            + licence.read_text()
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
