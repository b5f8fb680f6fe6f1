"""Prediction with an exported model: find the images, decode them as the data loader does, run batches, top-k.

The exported files take uint8 RGB NHWC images at the card's input size and return class probabilities, so all
that happens here is decoding (the data loader's own function, `decode_image`), batching and the runtime call.
Backends: ONNX Runtime (`onnx`), the torch.export program (`torch`), the TensorFlow SavedModel (`savedmodel`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .model_card import CardError, read_card

BACKENDS = ("auto", "onnx", "torch", "savedmodel")
DEVICES = ("auto", "cpu", "cuda")

# How the data loader turned files into training images; the card repeats it for users without this repository.
# Keep it next to decode_image: the two change together.
DECODE_NOTE = (
    "decode the file (a JPEG with Pillow's draft mode: Image.draft(None, ({side}, {side})) decodes at 1/2, 1/4 or 1/8 "
    "scale while both sides stay >= {side}), apply its EXIF orientation, convert to 8-bit RGB (alpha over white, "
    "16-bit scaled), resize the shorter side to {side} with bilinear interpolation (Pillow Image.BILINEAR) and crop "
    "the centre {side}x{side}, as the training data was"
)


def decode_image(path: Path, side: int) -> np.ndarray:
    """(side, side, 3) uint8 RGB: the data loader's decode and resize, so what predict.py reads is what training
    read. The one call into image_data.decode; raises image_data.decode.BadImage for an unreadable file."""
    from image_data.decode import decode

    return decode(path, side).transpose(1, 2, 0)


class PredictError(Exception):
    """Cannot predict at all (bad model folder, backend unavailable): one line."""


# ---------------------------------------------------------------------------------------------------------------
# runtimes: each is a callable uint8 (N, S, S, 3) -> float32 (N, classes)


class OnnxRunner:
    name = "onnx"

    def __init__(self, path: Path, device: str, threads: int | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


class TorchRunner:
    name = "torch"

    def __init__(self, path: Path, device: str, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        program = torch.export.load(str(path))
        if device == "cuda":  # exported on the CPU: its constants and device arguments move with the program
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, "cuda")
        self.module, self.device, self.torch = program.module(), torch.device(device), torch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(x).to(self.device)).cpu().numpy()


class SavedModelRunner:
    name = "savedmodel"

    def __init__(self, path: Path, device: str, threads: int | None):
        from trainables.keras_env import tf

        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TF already initialised in this process: keep its settings
                pass
        self.tf, self.device = tf, "/GPU:0" if device == "cuda" else "/CPU:0"
        self.loaded = tf.saved_model.load(str(path))  # held: its `serve` function only borrows the variables

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.tf.device(self.device):
            return self.loaded.serve(self.tf.constant(x)).numpy()


RUNNERS = {
    "onnx": ("onnx", OnnxRunner),
    "torch": ("torch_export", TorchRunner),
    "savedmodel": ("savedmodel", SavedModelRunner),
}


@dataclass
class Predictor:
    card: dict
    run: object  # a runner
    device: str

    @property
    def classes(self) -> list[str]:
        return self.card["classes"]

    @property
    def side(self) -> int:
        return int(self.card["input"]["size"])

    @property
    def backend(self) -> str:
        return self.run.name

    @property
    def carries(self) -> str:
        """The options the exported model carries (its card's final_model), for predict.py's first line."""
        return self.card.get("final_model", {}).get("carries") or "the plain retrain, no option (an older card)"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


def gpu_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded: checked before asking a framework, so a CPU machine's `--device auto`
    does not pay for importing torch or TensorFlow (seconds) just to hear "no"."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg"))


def _cuda_available(backend: str) -> bool:
    if backend == "onnx":
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    if backend == "savedmodel":
        from trainables.keras_env import tf

        return bool(tf.config.list_physical_devices("GPU"))
    import torch

    return torch.cuda.is_available()


def resolve_backend(card: dict, backend: str, device: str) -> tuple[str, str]:
    """(backend, device). auto: ONNX Runtime when the card has an ONNX file (fastest here, see docs/predict.md) and,
    for --device cuda, a CUDA build of onnxruntime; else the framework's own export."""
    files = {k: f for k, f in card["files"].items() if f.get("path")}  # a failed converter leaves {"error": ...}
    native = "torch" if card["framework"] == "torch" else "savedmodel"
    if backend == "auto":
        candidates = [b for b in ("onnx", native) if RUNNERS[b][0] in files]
        if device == "cuda" or (device == "auto" and gpu_driver_present()):
            on_gpu = [b for b in candidates if _cuda_available(b)]
            if on_gpu or device == "cuda":
                candidates = on_gpu or candidates
                device = "cuda" if on_gpu else device
        if not candidates:
            raise PredictError(f"the model card lists no file this code can run ({', '.join(files) or 'none'})")
        backend = candidates[0]
    key = RUNNERS[backend][0] if backend in RUNNERS else None
    if key not in files:
        have = ", ".join(b for b, (k, _) in RUNNERS.items() if k in files) or "none"
        raise PredictError(f"--backend {backend}: this model has no such export (it has: {have})")
    if device == "auto":
        device = "cuda" if gpu_driver_present() and _cuda_available(backend) else "cpu"
    if device == "cuda" and not _cuda_available(backend):
        raise PredictError(f"--device cuda: the {backend} backend sees no CUDA GPU here; use --device cpu")
    return backend, device


def load_predictor(
    model_dir: str | Path, backend: str = "auto", device: str = "auto", threads: int | None = None
) -> Predictor:
    """The exported model of a report folder (its model_card.json and files), ready to call on uint8 NHWC."""
    card = read_card(model_dir)
    backend, device = resolve_backend(card, backend, device)
    key, runner = RUNNERS[backend]
    path = Path(model_dir) / card["files"][key]["path"]
    if not path.exists():
        raise CardError(f"{path} is missing (named in {model_dir}/model_card.json); re-export the model")
    try:
        return Predictor(card, runner(path, device, threads), device)
    except ImportError as e:
        raise PredictError(f"--backend {backend} needs {e.name or e}; pip install it or pick another backend") from None


# ---------------------------------------------------------------------------------------------------------------
# files -> batches -> predictions


def image_extensions() -> tuple[str, ...]:
    from image_data.decode import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def find_images(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]], list[Path]]:
    """(image files, [(input, why not usable)], files ignored in folders). A named file is tried whatever its
    extension; in a folder (searched recursively, sorted) only files with an image extension are taken."""
    exts = image_extensions()
    files, problems, ignored = [], [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file())
            images = [f for f in found if f.suffix.lower() in exts]
            ignored += [f for f in found if f.suffix.lower() not in exts]
            files += images
        elif p.is_file():
            files.append(p)
        else:
            problems.append((item, "no such file or folder"))
    return files, problems, ignored


@dataclass
class Prediction:
    path: Path
    probs: np.ndarray | None  # (classes,) float32, None when the file could not be read
    error: str | None = None  # why not, without the path (the data loader's reasons: empty, truncated, ...)


def _decode_or_error(path: Path, side: int):
    try:
        return decode_image(path, side)
    except Exception as e:  # any unreadable file (BadImage, or anything else the decode raises): one line, go on
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return reason.replace(f"{path}: ", "").replace(str(path), "the file")  # the path has its own column


def predict_files(
    predictor: Predictor, paths: list[Path], batch_size: int = 256, workers: int | None = None
) -> Iterator[Prediction]:
    """Predictions in input order. Files are decoded by a thread pool (Pillow releases the GIL) one batch ahead of
    the model, so decoding and inference overlap; memory holds at most two batches of images."""
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(chunk):
            return [pool.submit(_decode_or_error, p, predictor.side) for p in chunk]

        pending = submit(chunks[0]) if chunks else []
        for k, chunk in enumerate(chunks):
            decoded = [f.result() for f in pending]
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            good = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
            probs = predictor(np.stack([decoded[i] for i in good])) if good else None
            row = {i: j for j, i in enumerate(good)}
            for i, path in enumerate(chunk):
                if i in row:
                    yield Prediction(path, probs[row[i]])
                else:
                    yield Prediction(path, None, decoded[i])


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(classes)))]
    return [(classes[i], float(probs[i])) for i in order]


def ignored_line(ignored: list[Path], width: int = 120) -> str:
    """One line naming the files of the input folders that were not tried (no image extension), as many as fit."""
    n = len(ignored)
    head = f"ignored {n} file{'s' if n != 1 else ''} without an image extension: "
    shown: list[str] = []
    for i, p in enumerate(ignored):
        rest = n - i - 1
        tail = f", ... ({rest} more)" if rest else ""
        if shown and len(head + ", ".join([*shown, str(p)]) + tail) > width:
            return head + ", ".join(shown) + f", ... ({n - len(shown)} more)"
        shown.append(str(p))
    return head + ", ".join(shown)


def format_line(pred: Prediction, classes: list[str], k: int) -> str:
    return f"{pred.path}: " + ", ".join(f"{c} {p:.3f}" for c, p in top_k(pred.probs, classes, k))


class CsvWriter:
    """path, class_1, prob_1, ..., class_k, prob_k, error (empty for read files; the reason for unreadable ones)."""

    def __init__(self, path: str | Path, k: int):
        self.k = k
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file, lineterminator="\n")  # csv's default is CRLF, whatever the platform
        self.writer.writerow(["path", *[f"{w}_{i}" for i in range(1, k + 1) for w in ("class", "prob")], "error"])

    def write(self, pred: Prediction, classes: list[str]) -> None:
        if pred.probs is None:
            self.writer.writerow([str(pred.path), *[""] * (2 * self.k), pred.error])
            return
        top = top_k(pred.probs, classes, self.k)
        cells = [v for c, p in top for v in (c, f"{p:.6f}")] + [""] * (2 * (self.k - len(top)))
        self.writer.writerow([str(pred.path), *cells, ""])

    def close(self) -> None:
        self.file.close()
