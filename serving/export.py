"""Export a report's model with its preprocessing inside, check every file against the training framework, and
write model_card.json. Called by report.py after a report (and by `report.py --export-only RESULTS_DIR`).

Every exported file takes uint8 RGB images in NHWC layout, (N, S, S, 3) for any N, at the stored size S (the side
the data loader resized the training images to), and returns float32 softmax probabilities (N, classes); the
normalisation, a pretrained model's resize to its resolution and the softmax are inside. NHWC because it is what
image decoders give (`np.asarray(PIL.Image)`) and Keras' own layout, so both frameworks' files take the same input.

- torch: model.pt2 (torch.export) and model.onnx (torch.onnx, dynamo exporter)       -> serving/export_torch.py
- Keras: model_inference.keras, model_savedmodel/ (model.export) and model.onnx (tf2onnx) -> serving/export_keras.py

The check: each file is reloaded from disk and run on up to CHECK_IMAGES real test images (evenly spaced over the
test split) next to the framework's own predict, float32 on the CPU. Top-1 agreement must be 100% and every
probability within TOLERANCE; otherwise ExportError (one line) and the exported files are removed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from . import model_card
from .predict import DECODE_NOTE

CHECK_IMAGES = 1000
TOLERANCE = 1e-4
CHECK_BATCH = 250
FORMATS = {
    "torch_export": "torch.export ExportedProgram (.pt2)",
    "onnx": "ONNX",
    "keras": "Keras 3 (.keras)",
    "savedmodel": "TensorFlow SavedModel (Keras model.export), endpoint 'serve'",
}


class ExportError(Exception):
    """The export failed or disagrees with the framework: one line."""


def first_line(e: BaseException) -> str:
    """`Type: message` on one line, at most 200 characters: what a one-line error quotes of an exception (the
    message's first two lines: torch's load_state_dict says what failed on its second)."""
    text = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {' '.join(text[:2])}"[:200]


def check_images(x_test: np.ndarray, n: int = CHECK_IMAGES) -> np.ndarray:
    """Up to n test images (NCHW uint8), evenly spaced, so every class of a class-sorted test split is in."""
    idx = np.unique(np.linspace(0, len(x_test) - 1, min(n, len(x_test))).round().astype(int))
    return np.ascontiguousarray(x_test[idx])


def compare(name: str, framework: str, expected: np.ndarray, got: np.ndarray) -> dict:
    """Top-1 agreement and max |Δp| of `got` against the framework's `expected` probabilities; ExportError when
    either misses its target."""
    if got.shape != expected.shape:
        raise ExportError(f"{name} returns shape {got.shape}, {framework} {expected.shape}")
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    result = {
        "images": len(got),
        "top1_agreement": agree,
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "against": f"{framework} predict, float32, CPU",
        "passed": agree == 1.0 and diff <= TOLERANCE,
    }
    if not result["passed"]:
        raise ExportError(
            f"{name} disagrees with {framework} on {len(got)} test images: top-1 agreement "
            f"{agree:.2%} (need 100%), max |Δp| {diff:.1e} (need <= {TOLERANCE:g})"
        )
    return result


def _export_torch(model, mean, std, side: int, x_check: np.ndarray, out_dir: Path, onnx_runner, flip_tta: bool):
    from . import export_torch as T

    model = T.on_cpu(model)
    expected = T.reference(model, x_check, mean, std, flip_tta)
    wrapper, resize_to = T.wrap(model, mean, std, flip_tta)
    paths = T.export(wrapper, side, out_dir)
    nhwc = np.ascontiguousarray(x_check.transpose(0, 2, 3, 1))
    runs = {"torch_export": lambda p: T.run_program(p, nhwc, CHECK_BATCH), "onnx": lambda p: onnx_runner(p, nhwc)}
    files = {k: {"check": compare(paths[k].name, "torch", expected, runs[k](paths[k]))} for k in paths}
    meta = {"mean": wrapper.mean.flatten().tolist(), "std": wrapper.std.flatten().tolist(), "resize_to": resize_to}
    return paths, files, meta, None, T.load_note


def _export_keras(model, mean, std, side: int, x_check: np.ndarray, out_dir: Path, onnx_runner, flip_tta: bool):
    from . import export_keras as K

    expected = K.reference(model, x_check, mean, std, flip_tta)
    paths, onnx_error = K.export(K.wrap(model, mean, std, side, flip_tta), out_dir)
    nhwc = np.ascontiguousarray(x_check.transpose(0, 2, 3, 1))
    runs = {
        "keras": lambda p: K.run_keras(p, nhwc, CHECK_BATCH),
        "onnx": lambda p: onnx_runner(p, nhwc),
        "savedmodel": lambda p: K.run_savedmodel(p, nhwc, CHECK_BATCH),
    }
    files = {k: {"check": compare(paths[k].name, "keras", expected, runs[k](paths[k]))} for k in paths}
    meta = {"mean": list(mean), "std": list(std), "resize_to": None}
    return paths, files, meta, onnx_error, K.load_note


def _run_onnx(path: Path, x_nhwc: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: x_nhwc[i : i + CHECK_BATCH]})[0] for i in range(0, len(x_nhwc), CHECK_BATCH)]
    )


def _remove(paths) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


# keyed by trainables.framework's Framework.name
EXPORTERS = {"torch": _export_torch, "keras": _export_keras}


def export_model(
    out_dir: Path,
    *,
    framework: str,
    model,
    dataset,
    config: dict,
    info: dict,
    metrics: dict,
    final_model: dict | None = None,
    n_check: int = CHECK_IMAGES,
    quiet: bool = False,
) -> dict:
    """Export `model` (trained on `dataset`) into out_dir, check every file, write model_card.json; returns the card.
    Raises ExportError (files removed) when an export fails or disagrees with the framework. `final_model`: what
    the shipped model carries (analysis/final_model.py's record); its "flip_tta" puts the flip average inside every
    file, checked against the framework's predict with the same flip average."""
    out_dir = Path(out_dir)
    side = int(dataset.x_test.shape[-1])
    x_check = check_images(dataset.x_test, n_check)
    mean, std = tuple(dataset.mean), tuple(dataset.std)
    if framework not in EXPORTERS:  # a new Framework (trainables/framework.py) needs its exporter here
        raise ExportError(f"no exporter for framework {framework!r} (have: {', '.join(EXPORTERS)})")
    exporter = EXPORTERS[framework]
    written = [out_dir / n for n in ("model.pt2", "model.onnx", "model_inference.keras", "model_savedmodel")]
    try:
        flip_tta = bool((final_model or {}).get("flip_tta"))
        paths, files, meta, onnx_error, note = exporter(model, mean, std, side, x_check, out_dir, _run_onnx, flip_tta)
    except ExportError:
        _remove(written)
        raise
    except Exception as e:  # the exporters' own errors (unsupported op, converter bug): one line, not a traceback
        _remove(written)
        raise ExportError(f"{framework} export failed: {first_line(e)}") from e
    for key, path in paths.items():
        files[key].update(
            path=path.name, format=FORMATS[key], sha256=model_card.sha256(path), load=note(key, path.name)
        )
    if onnx_error:
        files["onnx"] = {"path": None, "error": f"not exported: {onnx_error}"}
    card = model_card.build_card(
        name=out_dir.name,
        framework=framework,
        model=config["model"],
        classes=dataset.classes,
        side=side,
        mean=meta["mean"],
        std=meta["std"],
        resize_to=meta["resize_to"],
        decode_note=DECODE_NOTE,
        files=files,
        metrics=metrics,
        config=config,
        info=info,
        fingerprint=model_card.data_fingerprint(dataset),
        final_model=final_model,
    )
    model_card.write_card(out_dir, card)
    if not quiet:
        for key, f in files.items():
            if "check" in f:
                c = f["check"]
                print(
                    f"exported {f['path']}: top-1 agreement {c['top1_agreement']:.0%} with {framework} on "
                    f"{c['images']} test images, max |Δp| {c['max_abs_diff']:.1e}",
                    file=sys.stderr,
                )
            else:
                print(f"warning: {key}: {f['error']}", file=sys.stderr)
    return card


def export_existing(
    results_dir: str,
    *,
    storage_path: str = "experiments",
    experiment: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    """`report.py --export-only RESULTS_DIR`: export the model of a report folder written before (model.pth or
    model.keras + best_config.json + metrics.json). The check needs the test images, so the experiment the report
    came from is found by the folder's name under `storage_path` (or `experiment`, a name or path)."""
    from analysis.experiment import EXPERIMENT_FILE, join, read_json
    from analysis.trials import ReportError, resolve_experiment
    from image_data.cache import load_dataset

    d = Path(results_dir)
    needed = [d / "best_config.json", d / "metrics.json"]
    missing = [p.name for p in needed if not p.exists()]
    if not d.is_dir() or missing:
        raise ExportError(f"{d} is not a report folder (missing {', '.join(missing) or 'the folder'}); run report.py")
    config = json.loads((d / "best_config.json").read_text())
    classes = config.pop("classes", None)
    config.pop("input", None)
    final_model = config.pop("final_model", None)  # reports from before the options: a plain model
    try:
        path = resolve_experiment(experiment or d.name, storage_path)
    except ReportError as e:
        raise ExportError(
            f"{e}; --export-only checks on the experiment's test images: pass --experiment PATH"
        ) from None
    info = read_json(join(path, EXPERIMENT_FILE))
    from trainables.models.user import changed

    if why := changed(info, "--export-only"):  # a user's builder file edited since: not the trained architecture
        raise ExportError(why)
    src = info["data"]
    dataset = load_dataset(
        data_dir or src["path"],
        seed=info["split_seed"],
        image_size=src.get("image_size", 32),
        cache_dir=cache_dir,
        subset=src.get("subset"),
    )
    if classes is not None and list(classes) != list(dataset.classes):
        raise ExportError(f"{d} was trained on classes {classes}, but {src['path']} has {dataset.classes}")
    framework = info.get("framework", "torch")
    # the stored side the model was trained at: LeNet5's first linear layer depends on it (--image-size N)
    build = {**config, "input_size": int(dataset.x_test.shape[-1]), "final_model": final_model}  # an ensemble?
    try:
        if framework == "torch":
            from .export_torch import load_trained

            weights = d / "model.pth"
            model = load_trained(weights, build, dataset.num_classes) if weights.exists() else None
        else:
            from .export_keras import load_trained

            weights = d / "model.keras"
            model = load_trained(weights, config["model"]) if weights.exists() else None
    except Exception as e:  # a model file that does not fit its config: one line, not a traceback
        raise ExportError(f"cannot rebuild the model of {d} from its best_config.json: {first_line(e)}") from e
    if model is None:
        raise ExportError(f"{d} has no {weights.name}; run report.py on the experiment again")
    metrics = json.loads((d / "metrics.json").read_text())
    return export_model(
        d,
        framework=framework,
        model=model,
        dataset=dataset,
        config=config,
        info=info,
        metrics=metrics,
        final_model=final_model,
    )
