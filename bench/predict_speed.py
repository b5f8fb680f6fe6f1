"""Prediction speed, side by side in one run: the plain framework path vs the exported files predict.py runs.

    python bench/predict_speed.py --model results/NAME --images ../shared/data/cifar10/test
    python bench/predict_speed.py --model results/NAME --images DIR --repeats 5 --json out.json

1. framework: the model rebuilt from model.pth + best_config.json and run through the training code's own
   `trainables.torch_loop.predict` (normalise, resize for pretrained models, forward), then softmax;
2. torch.export: model.pt2, the exported program with preprocessing and softmax inside (predict.py --backend torch);
3. onnxruntime: model.onnx (predict.py --backend onnx, its default on a CPU).
Two measurements for each: inference only, on the images decoded once into memory (uint8, NCHW for the framework
path as training stores them, NHWC for the exported files), and end to end from the files as predict.py does it
(decode in threads one batch ahead + inference). Same batch size and threads for all; the three alternate in each
repeat; the table gives the best and the median of --repeats and compares medians. The
exported files' probabilities are also compared with the framework's on every image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.export_torch import load_trained  # noqa: E402
from serving.model_card import read_card  # noqa: E402
from serving.predict import OnnxRunner, Predictor, TorchRunner, decode_image, find_images, predict_files  # noqa: E402
from trainables.torch_loop import norm_tensors, predict  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a report folder with model_card.json (a torch model)")
    p.add_argument("--images", required=True, help="a folder of images, e.g. the CIFAR-10 test split")
    p.add_argument("--batch-size", type=int, default=256, help="predict.py's default")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


class FrameworkRunner:
    """The plain framework path as a predict.py runner: model.pth into its architecture, the training code's predict."""

    name = "framework"

    def __init__(self, model_dir: Path, card: dict):
        config = json.loads((model_dir / "best_config.json").read_text())
        self.model = load_trained(model_dir / "model.pth", config, len(card["classes"]))
        # the data set's statistics; predict's input_config swaps in ImageNet's for a pretrained model, as in training
        self.mean, self.std = norm_tensors(config["input"]["mean"], config["input"]["std"], "cpu")

    def nchw(self, x: np.ndarray) -> np.ndarray:
        logits = predict(self.model, torch.from_numpy(x), mean=self.mean, std=self.std, device=torch.device("cpu"),
                         batch_size=len(x))  # fmt: skip
        return torch.softmax(logits, 1).numpy()

    def __call__(self, x_nhwc: np.ndarray) -> np.ndarray:  # decoded files are HWC, as for the exported files
        return self.nchw(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))


def batches(run, x: np.ndarray, bs: int) -> np.ndarray:
    return np.concatenate([run(x[i : i + bs]) for i in range(0, len(x), bs)])


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> int:
    args = parse_args(argv)
    model_dir = Path(args.model)
    card = read_card(model_dir)
    if card["framework"] != "torch":
        print("error: this bench compares torch's predict with its exports; give a torch model", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    side = int(card["input"]["size"])
    runners = {
        "framework": FrameworkRunner(model_dir, card),
        "torch.export": TorchRunner(model_dir / card["files"]["torch_export"]["path"], "cpu", args.threads),
        "onnxruntime": OnnxRunner(model_dir / card["files"]["onnx"]["path"], "cpu", args.threads),
    }
    paths, problems, _ = find_images([args.images])
    if problems or not paths:
        print(f"error: no images in {args.images}", file=sys.stderr)
        return 2
    print(f"{len(paths)} images from {args.images}; model {card['model']} ({model_dir}); batch {args.batch_size}, "
          f"{args.threads} threads, {os.cpu_count()} CPUs; load average before: {load()}")  # fmt: skip

    t = time.perf_counter()
    x_nhwc = np.stack([decode_image(p, side) for p in paths])  # one thread: the decode alone, for scale
    decode_s = time.perf_counter() - t
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    x_nhwc = np.ascontiguousarray(x_nhwc)
    n = len(x_nhwc)

    infer = {k: [] for k in runners}
    e2e = {k: [] for k in runners}
    probs = {}
    for run in runners.values():  # warm-up (first-call allocation, ORT's graph set-up)
        run(x_nhwc[: args.batch_size])
    for _ in range(args.repeats):
        for name, run in runners.items():
            # in memory, the framework path gets the layout training stores (NCHW): no transpose to pay
            fn, x = (run.nchw, x_nchw) if name == "framework" else (run, x_nhwc)
            t = time.perf_counter()
            probs[name] = batches(fn, x, args.batch_size)
            infer[name].append(n / (time.perf_counter() - t))
            predictor = Predictor(card, run, "cpu")
            t = time.perf_counter()
            done = sum(p.probs is not None for p in predict_files(predictor, paths, args.batch_size))
            e2e[name].append(done / (time.perf_counter() - t))

    ref = probs["framework"]
    rows = []
    # Best and median of the repeats; the ratio is of medians (the repeats alternate, so a neighbour's burst hits
    # all three alike, while a best-of picks whichever path had the one quiet moment).
    med = {k: float(np.median(v)) for k, v in infer.items()}
    med_e2e = {k: float(np.median(v)) for k, v in e2e.items()}
    for name in runners:
        agree = float((probs[name].argmax(1) == ref.argmax(1)).mean())
        diff = float(np.abs(probs[name] - ref).max())
        rows.append({"path": name, "inference_best": max(infer[name]), "inference_median": med[name],
                     "inference_vs_framework": med[name] / med["framework"], "end_to_end_best": max(e2e[name]),
                     "end_to_end_median": med_e2e[name], "end_to_end_vs_framework": med_e2e[name] / med_e2e["framework"],
                     "top1_agreement": agree, "max_abs_diff": diff})  # fmt: skip
    print(f"decode alone (1 thread): {n / decode_s:.0f} images/s")
    print(f"{'':<13}{'inference images/s':>30}{'end to end images/s':>30}")
    print(f"{'path':<13}{'best':>8}{'median':>8}{'vs fw':>14}{'best':>8}{'median':>8}{'vs fw':>14}"
          f"{'top-1 agree':>13}{'max |Δp|':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['path']:<13}{r['inference_best']:>8.0f}{r['inference_median']:>8.0f}"
              f"{r['inference_vs_framework']:>14.2f}{r['end_to_end_best']:>8.0f}{r['end_to_end_median']:>8.0f}"
              f"{r['end_to_end_vs_framework']:>14.2f}{r['top1_agreement']:>13.2%}{r['max_abs_diff']:>10.1e}")  # fmt: skip
    print(
        f"{args.repeats} repeats each, 'vs fw' = ratio of medians to the framework path; load average after: {load()}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"images": n, "model": card["model"], "batch_size": args.batch_size,
                                               "threads": args.threads, "repeats": args.repeats, "rows": rows,
                                               "all_inference": infer, "all_end_to_end": e2e}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
