"""model_card.json: everything needed to use an exported model without this repository.

What the exported files take and return, the class names in output order, how images were prepared for them, how
they were checked, the test metrics, the config, the data fingerprint and the versions that made them. `usage`
holds a self-contained Python snippet (onnxruntime + Pillow) that tests run from the results folder alone.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

from analysis.shell import command, path_arg

CARD_FILE = "model_card.json"
FORMAT_VERSION = 1
VERSION_PACKAGES = (
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "tf2onnx",
    "numpy",
    "pillow",
)


class CardError(Exception):
    """No usable model card: one line saying what is missing and what to run."""


def sha256(path: Path) -> str:
    """Of a file, or of a folder's files (sorted relative names and contents), e.g. a SavedModel."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for f in files:
        if Path(path).is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def data_fingerprint(dataset) -> str:
    """sha256 of the decoded train/val/test arrays and class names: the same images in the same order give the same
    value wherever the folder lives (unlike the cache key, which hashes paths and mtimes)."""
    h = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, dataset.x_test, dataset.y_test):
        h.update(str(a.shape).encode())
        h.update(memoryview(a).cast("B") if a.flags.c_contiguous else a.tobytes())
    h.update(json.dumps(list(dataset.classes)).encode())
    return h.hexdigest()


def versions() -> dict:
    from analysis.experiment import package_versions

    return {"python": platform.python_version(), **package_versions(VERSION_PACKAGES)}


def usage_snippet(onnx_file: str) -> str:
    """Predict one image with nothing but onnxruntime, Pillow and numpy, from the results folder."""
    return "\n".join(
        [
            "import json",
            "",
            "import numpy as np",
            "import onnxruntime as ort",
            "from PIL import Image",
            "",
            'card = json.load(open("model_card.json"))',
            'side = card["input"]["size"]',
            'image = Image.open("my_image.jpg").convert("RGB").resize((side, side), Image.BILINEAR)',
            f'session = ort.InferenceSession("{onnx_file}", providers=["CPUExecutionProvider"])',
            "batch = np.asarray(image, dtype=np.uint8)[None]  # (1, side, side, 3) uint8 RGB",
            "probs = session.run(None, {session.get_inputs()[0].name: batch})[0][0]",
            "for i in np.argsort(-probs)[:3]:",
            '    print(card["classes"][i], round(float(probs[i]), 4))',
        ]
    )


def build_card(
    *,
    name: str,
    framework: str,
    model: str,
    classes: list[str],
    side: int,
    mean,
    std,
    resize_to: int | None,
    decode_note: str,
    files: dict,
    metrics: dict,
    config: dict,
    info: dict,
    fingerprint: str,
    final_model: dict | None = None,
) -> dict:
    """The card as a dict. `files`: {key: {"path", "format", "load", "check": {...}, ...}}; `info`: experiment.json;
    `final_model`: the options the shipped model carries (analysis/final_model.py's record)."""
    from analysis.final_model import options_words

    data = info.get("data", {})
    final_model = {k: v for k, v in (final_model or {}).items() if k != "table"}
    onnx = files.get("onnx", {}).get("path")
    return {
        "format": "cifar-tune model card",
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": model,
        "framework": framework,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "classes": list(classes),
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "NHWC",
            "shape": [None, side, side, 3],
            "channels": "RGB",
            "range": [0, 255],
            "size": side,
            "batch": "any (dynamic first axis)",
            "how_to_make": decode_note.format(side=side),
        },
        "preprocessing_inside": {
            "normalise": "(x / 255 - mean) / std per channel",
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "resize_to": resize_to,
            "resize": f"bilinear to {resize_to}x{resize_to} after normalising (the pretrained weights' resolution)"
            if resize_to
            else "none: the model runs at the input size",
            "flip_tta": bool(final_model.get("flip_tta")),
        },
        "final_model": {"carries": options_words(final_model), **final_model},
        "output": {
            "name": "probabilities",
            "dtype": "float32",
            "shape": [None, len(classes)],
            "meaning": "softmax class probabilities; column i is classes[i]",
        },
        "files": files,
        "check": {
            "what": "each file reloaded and run on real test images against the training framework's own predict",
            "passed": all(f.get("check", {}).get("passed", False) for f in files.values() if "check" in f),
        },
        "test_metrics": {
            k: metrics[k] for k in ("accuracy", "top5_accuracy", "mean", "std", "retrained") if k in metrics
        }
        | ({"macro_f1": metrics["macro"]["f1"]} if "macro" in metrics else {})
        | ({"seeds": len(metrics["seeds"])} if "seeds" in metrics else {}),
        "config": config,
        "rebuild": rebuild(model, config, len(classes), side, info),
        "data": {
            "fingerprint_sha256": fingerprint,
            **{k: data.get(k) for k in ("path", "kind", "image_size", "subset", "num_train", "num_val", "num_test")},
            "split_seed": info.get("split_seed"),
        },
        "code": {"git_sha": info.get("git_sha"), "trained_with": info.get("packages", {})},
        "versions": versions(),
        "usage": {"python_onnxruntime": usage_snippet(onnx)} if onnx else {},
    }


def rebuild(model: str, config: dict, num_classes: int, side: int, info: dict) -> dict:
    """How to build the trained architecture again (then load model.pth / model.keras into it): the builder file and
    function with its sha256 at search time, the timm name, or the registry's name (trainables/models)."""
    from trainables.models import rebuild_recipe

    source = info.get("model_source") or {}
    return rebuild_recipe(model, config, num_classes, side) | (
        {"sha256_at_search": source["sha256"]} if source.get("sha256") else {}
    )


def write_card(out_dir: Path, card: dict) -> Path:
    path = Path(out_dir) / CARD_FILE
    path.write_text(json.dumps(card, indent=2, default=str))
    return path


def read_card(model_dir: str | Path) -> dict:
    d = Path(model_dir)
    if not d.is_dir():
        raise CardError(f"--model {d} is not a folder; give a report's folder, e.g. results/<experiment>")
    path = d / CARD_FILE
    if not path.exists():
        export = command("report.py", "--export-only", path_arg(d))
        hint = (
            f"export it with:\n{export}"
            if (d / "best_config.json").exists()
            else "run report.py on an experiment first"
        )
        raise CardError(f"{d} has no {CARD_FILE} (no exported model); {hint}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        export = command("report.py", "--export-only", path_arg(d))
        raise CardError(f"{path} is not valid JSON ({e}); re-export with:\n{export}") from None
    if card.get("format_version") != FORMAT_VERSION:
        raise CardError(f"{path} has format_version {card.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    return card
