"""Predict images with a report's exported model: top-k classes and probabilities per image.

    # after `python report.py ...` wrote results/NAME/ (model.onnx, model.pt2, model_card.json)
    python predict.py --model results/NAME photo.jpg other.png

    # a folder (searched recursively), every prediction to a CSV, top 5
    python predict.py --model results/NAME my_images/ --csv predictions.csv --top-k 5

    # on a GPU, through the torch.export program
    python predict.py --model results/NAME my_images/ --device cuda --backend torch

Reads any file the data loader reads (it decodes with the data loader's own function: RGB, resized to the model's
input size). An unreadable file gets one line on stderr and the rest go on; the exit code is nonzero only when no
image at all could be read (1) or the model/arguments are unusable (2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving.predict import BACKENDS, DEVICES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--model", required=True, help="a report folder with model_card.json, e.g. results/NAME")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--csv", default=None, metavar="OUT", help="write path, top-k classes/probabilities, error per file")
    g = p.add_argument_group("runtime")
    g.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: ONNX Runtime when there is model.onnx")
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto: a CUDA GPU when the backend sees one")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's, all cores)")
    g.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 4)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from analysis.shell import error_lines
    from serving.model_card import CardError
    from serving.predict import (
        CsvWriter,
        PredictError,
        find_images,
        format_line,
        ignored_line,
        load_predictor,
        predict_files,
    )

    if args.top_k < 1 or args.batch_size < 1:
        print("error: --top-k and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        predictor = load_predictor(args.model, args.backend, args.device, args.threads)
    except (CardError, PredictError) as e:
        print(error_lines(str(e)), file=sys.stderr)
        return 2
    print(
        f"model {args.model}: {predictor.card['model']} ({predictor.card['framework']}), {predictor.carries}",
        file=sys.stderr,
    )
    files, problems, ignored = find_images(args.inputs)
    for item, why in problems:
        print(f"skipped {item}: {why}", file=sys.stderr)
    if ignored:  # named, not only counted: a misnamed image (.jfif, no extension) shows here
        print(ignored_line(ignored), file=sys.stderr)
    writer = CsvWriter(args.csv, args.top_k) if args.csv else None
    t0, done, bad = time.perf_counter(), 0, len(problems)
    try:
        for pred in predict_files(predictor, files, args.batch_size, args.workers):
            if pred.probs is None:
                bad += 1
                print(f"skipped {pred.path}: {pred.error}", file=sys.stderr)
            else:
                done += 1
                if writer is None:
                    print(format_line(pred, predictor.classes, args.top_k))
            if writer is not None:
                writer.write(pred, predictor.classes)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {done} images", file=sys.stderr)
        return 130
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - t0
    if not done:
        print(
            f"error: no image could be read ({len(files) + len(problems)} inputs tried"
            + (f", {len(ignored)} non-image files ignored" if ignored else "")
            + ")",
            file=sys.stderr,
        )
        return 1
    print(
        f"{done} images predicted with {predictor.backend} on {predictor.device} in {seconds:.1f} s "
        f"({done / max(seconds, 1e-9):.0f} images/s)"
        + (f"; {bad} unreadable" if bad else "")
        + (f"; {len(ignored)} non-image files ignored" if ignored else "")
        + (f"; wrote {args.csv}" if writer is not None else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
