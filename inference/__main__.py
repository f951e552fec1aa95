"""Command line: ``python -m inference {train,ensemble,evaluate,predict,bench,track} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import json
import sys


def _train(args) -> int:
    from inference.train import train

    card = train(
        args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        seed=args.seed,
        resume=args.resume,
        max_train_rows=args.max_train_rows,
        precision=args.precision,
        swa_epochs=args.swa_epochs,
        labels=args.labels,
        ferplus=args.ferplus,
        mix_weight=args.mix_weight,
        lowres_share=args.lowres_share,
        init=args.init,
        label_smoothing=args.label_smoothing,
        teacher=args.teacher,
        teacher_weight=args.teacher_weight,
        select_size=args.select_size,
    )
    if card.get("finished") is False:  # trained under JAX or PyTorch: TensorFlow finishes it (train --resume)
        print(
            f"{card['epoch'] + 1} epochs done with the {card['backend']} backend, best PublicTest accuracy "
            f"{card['best_val_accuracy']:.4f} at epoch {card['best_epoch']}; checkpoints in {args.out}/checkpoints"
        )
        return 0
    print(
        f"PublicTest accuracy {card['public_test']['accuracy']:.4f}, macro-F1 {card['public_test']['macro_f1']:.4f}"
        f" (flip TTA {card['public_test_flip_tta']['accuracy']:.4f}); model and card in {args.out}"
    )
    return 0


def _ensemble(args) -> int:
    from inference.ensemble import EnsembleError, ensemble

    try:
        card = ensemble(args.members, data=args.data, out=args.out, ferplus=args.ferplus)
    except EnsembleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"PublicTest accuracy {card['public_test']['accuracy']:.4f} "
        f"(flip TTA {card['public_test_flip_tta']['accuracy']:.4f}) of {len(card['members'])} members; "
        f"model and card in {args.out}"
    )
    return 0


def _evaluate(args) -> int:
    from inference.evaluate import evaluate

    if args.labels == "ferplus" and not args.ferplus:
        print("error: --labels ferplus needs --ferplus PATH (FER+ fer2013new.csv)", file=sys.stderr)
        return 2
    try:
        sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip()) if args.sizes else ()
    except ValueError:
        print(
            f"error: --sizes takes comma-separated pixel sizes such as 48,32,24,16, not {args.sizes!r}", file=sys.stderr
        )
        return 2
    report = evaluate(
        args.data,
        usage=args.usage,
        model_path=args.model,
        flip_tta=args.tta,
        ferplus=args.ferplus if args.labels == "ferplus" else None,
        sizes=sizes,
        calibration=args.calibration,
        small_face_model=False if args.small_face_model == "none" else args.small_face_model,
    )
    if args.json:
        print(json.dumps(report))
    else:
        from inference.metrics import format_report

        print(f"{report['source']} ({report['usage'] or 'all rows'}), model {report['model']}")
        if report["small_face_model"] and sizes:
            print(f"faces under {report['small_face_side']} px: {report['small_face_model']}")
        print(format_report(report))
        _print_extras(report, "FER2013 labels")
        if "ferplus" in report:
            fp = report["ferplus"]
            print(
                f"\nFER+ majority ({fp['n']} faces, {fp['dropped']} dropped, {fp['ties']} ties): accuracy "
                f"{fp['accuracy']:.4f}, macro-F1 {fp['macro_f1']:.4f}, cross-entropy vs votes {fp['cross_entropy']:.4f}"
                f" nats; clear-majority faces ({fp['clear_majority']['n']}): accuracy "
                f"{fp['clear_majority']['accuracy']:.4f}"
            )
            print("recall: " + ", ".join(f"{k} {v['recall']:.3f}" for k, v in fp["per_class"].items()))
            ag = fp["agreement"]
            if ag["share"] is not None:
                print(
                    f"FER2013 label is a FER+ majority label on {ag['share']:.4f} of these faces; accuracy there "
                    + _share(ag["agreed"]["fer2013_label"])
                    + f"; on the {ag['disputed']['n']} disputed faces the answer is the FER2013 label on "
                    + _share(ag["disputed"]["fer2013_label"])
                    + ", a FER+ majority label on "
                    + _share(ag["disputed"]["ferplus_majority"])
                )
            _print_extras(fp, "FER+ labels")
        for err in report["skipped_rows"][:20]:
            print(f"skipped: {err}", file=sys.stderr)
    return 0


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_extras(report: dict, name: str) -> None:
    if "sizes" in report:
        print(
            f"\naccuracy per face size ({name}): "
            + ", ".join(f"{s} px {v['accuracy']:.4f}" for s, v in report["sizes"].items())
        )
    if "calibration" in report:
        cal = report["calibration"]
        print(f"calibration ({name}): ECE {cal['ece']:.4f} (15 bins); mean probability / true share per class:")
        print(
            "  "
            + ", ".join(f"{k} {v['mean_probability']:.3f}/{v['true_share']:.3f}" for k, v in cal["per_class"].items())
        )


def _predict(args) -> int:
    from inference.predict import predict_files

    results = predict_files(args.images, out_dir=args.out, model_path=args.model)
    if args.json:
        print(json.dumps(results))
    else:
        for item in results:
            if "error" in item:
                print(f"{item['image']}: ERROR {item['error']}")
                continue
            faces = ", ".join(f"{f['label']} {f['score']:.2f} at {tuple(f['box'])}" for f in item["faces"])
            print(f"{item['image']}: {len(item['faces'])} face(s){': ' + faces if faces else ''}")
    return 1 if results and all("error" in r for r in results) else 0


def _bench(args) -> int:
    from inference.bench import format_bench, run_bench

    result = run_bench(image_path=args.image, model_path=args.model)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _track(args) -> int:
    from inference.track_video import track_files

    results = track_files(args.videos, out_dir=args.out, fps=args.fps)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
    else:
        for item in results:
            if "error" in item:
                print(f"{item['video']}: ERROR {item['error']}")
                continue
            faces = sum(len(frame["faces"]) for frame in item["frames"])
            print(f"{item['video']}: {len(item['frames'])} frame(s), {faces} face(s), {len(item['tracks'])} track(s)")
            for track in item["tracks"]:
                span = f"{track['first_s']:.2f}-{track['last_s']:.2f} s"
                print(f"  track {track['track']}: {span}, {track['frames']} frame(s)")
    return 1 if any("error" in r for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m inference``."""
    parser = argparse.ArgumentParser(prog="python -m inference", description="FER2013 emotion recognition")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the CNN on FER2013 (Training split; PublicTest for validation)")
    p.add_argument("--data", required=True, help="fer2013.csv[.gz] or image-folder root (<root>/<split>/<label>/)")
    p.add_argument("--epochs", type=int, default=50, help="maximum epochs (cosine schedule length), default 50")
    p.add_argument("--out", default="runs/latest", help="output folder, default runs/latest")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.keras")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--patience", type=int, default=15, help="early-stopping patience in epochs")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="auto: mixed bfloat16 on a GPU or a CPU with native bfloat16, else float32 (exports are float32)",
    )
    p.add_argument(
        "--swa-epochs", type=int, default=0, help="average the weights of the last N epochs (0: off), see README"
    )
    p.add_argument(
        "--labels",
        choices=["fer2013", "ferplus", "mixed"],
        default="fer2013",
        help="targets: FER2013 one-hot (default), FER+ vote distribution, or a mix of both (see README)",
    )
    p.add_argument("--ferplus", help="FER+ fer2013new.csv (rows in the order of --data); needed by ferplus/mixed")
    p.add_argument("--mix-weight", type=float, default=0.5, help="weight of the FER2013 one-hot in --labels mixed")
    p.add_argument(
        "--lowres-share", type=float, default=0.0, help="share of training faces shrunk to 12-40 px and back (0: off)"
    )
    p.add_argument("--init", help="warm start: .keras model of the same architecture to start from")
    p.add_argument("--teacher", help="distil from this ONNX model (e.g. the shipped ensemble): soft training targets")
    p.add_argument(
        "--teacher-weight", type=float, default=0.5, help="weight of the teacher's probabilities in the targets"
    )
    p.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the loss, default 0.1")
    p.add_argument(
        "--select-size",
        type=int,
        help="choose the checkpoint on PublicTest faces shrunk to this many pixels (a small-face model), default 48",
    )
    p.add_argument("--max-train-rows", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="accuracy, macro-F1, per-class metrics and confusion matrix")
    p.add_argument("data", help="fer2013.csv[.gz] or image-folder root")
    p.add_argument("--usage", choices=["Training", "PublicTest", "PrivateTest"], help="only rows of this split")
    p.add_argument("--model", help="ONNX model (default: the shipped model)")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirrored face (flip test-time augmentation); default: as served (on)",
    )
    p.add_argument(
        "--labels",
        choices=["fer2013", "ferplus"],
        default="fer2013",
        help="ferplus: also measure against FER+ (majority accuracy, cross-entropy vs votes; needs --ferplus)",
    )
    p.add_argument("--ferplus", help="FER+ fer2013new.csv, rows in the order of the data file")
    p.add_argument("--sizes", help="comma-separated face sizes in pixels, e.g. 48,32,24,16: accuracy per size")
    p.add_argument(
        "--small-face-model",
        help="ONNX model for --sizes under 40 px, or 'none' (default: as served, the shipped small-face model"
        " unless --model is given)",
    )
    p.add_argument("--calibration", action="store_true", help="ECE (15 bins) and mean probability vs true share")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("ensemble", help="serve several trained models as one: the mean of their probabilities")
    p.add_argument("members", nargs="+", help=".keras models of the same input and output (two or more)")
    p.add_argument("--data", required=True, help="fer2013.csv[.gz]: PublicTest rows evaluate the ensemble")
    p.add_argument("--ferplus", help="FER+ fer2013new.csv (rows in the order of --data): FER+ metrics in the card")
    p.add_argument("--out", required=True, help="output folder: model.keras, model.onnx, model_card.json")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser("predict", help="detect and classify faces in photos")
    p.add_argument("images", nargs="+", help="jpg/png/tiff/bmp files")
    p.add_argument("--out", help="folder for annotated copies and probability charts")
    p.add_argument("--model", help="ONNX model (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    p.set_defaults(func=_predict)

    p = sub.add_parser("bench", help="serving speed and memory vs the seed-style baseline")
    p.add_argument("image", nargs="?", help="photo to build the 640x480 frame from (default: a group photo)")
    p.add_argument("--model", help="ONNX model (default: the shipped model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)

    p = sub.add_parser("track", help="tracked, smoothed emotions over video files (anonymous per-video tracks)")
    p.add_argument("videos", nargs="+", help="video files OpenCV can read (mp4, avi, ...)")
    p.add_argument("--fps", type=float, help="analyse this many frames per second of video (default: every frame)")
    p.add_argument(
        "--out", help="folder for annotated MP4s (<stem>.tracks.mp4) and timeline plots (<stem>.timeline.png)"
    )
    p.add_argument("--json", action="store_true", help="print JSON: an object for one video, a list for several")
    p.set_defaults(func=_track)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a dataset/model/input error, with a message)."""
    from inference.classifier import ModelLoadError
    from inference.data import DatasetError
    from inference.imageio import ImageDecodeError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ModelLoadError, ImageDecodeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
