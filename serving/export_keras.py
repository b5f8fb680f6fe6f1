"""Keras: the trained model behind a uint8 input and its normalisation, as a .keras file, a TensorFlow SavedModel
(`model.export`) and, through Keras' own ONNX export (tf2onnx), an ONNX file; with `flip_tta`, the report's flip
test-time augmentation inside (the mean of the probabilities of each image and of its mirror).

The normalisation is a built-in `Rescaling` layer (x * 1/(255 std) - mean/std per channel, in float32 even under
mixed precision), so the SavedModel and ONNX files need no project code; the .keras file does (the custom Block).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from trainables.keras_env import keras, tf
from trainables.keras_loop import predict

KERAS_FILE = "model_inference.keras"
SAVEDMODEL_DIR = "model_savedmodel"
ONNX_FILE = "model.onnx"


def load_trained(path: Path, model: str | None = None):
    """A saved .keras model; `model` (its --model) is imported first, so a user's file registers its own layers."""
    import trainables.models.keras_resnet  # noqa: F401  registers the custom Block layer

    if model is not None:
        from trainables.models import get_spec

        get_spec(model).load()
    return keras.saving.load_model(path, compile=False)


def reference(model, x_nchw: np.ndarray, mean, std, flip_tta: bool = False) -> np.ndarray:
    """The training framework's own answer: trainables.keras_loop.predict (already probabilities)."""
    return predict(model, x_nchw, mean=mean, std=std, flip_tta=flip_tta)


def wrap(model, mean, std, side: int, flip_tta: bool = False):
    inputs = keras.Input((side, side, 3), dtype="uint8", name="images")
    x = keras.layers.Rescaling(
        scale=[1.0 / (255.0 * s) for s in std],
        offset=[-m / s for m, s in zip(mean, std, strict=True)],
        dtype="float32",
        name="normalise",
    )(inputs)
    if not flip_tta:
        return keras.Model(inputs, model(x), name=f"{model.name}_uint8")
    mirrored = keras.ops.flip(x, axis=2)  # NHWC: axis 2 is the width
    probs = keras.layers.Average(name="flip_tta")([model(x), model(mirrored)])
    return keras.Model(inputs, probs, name=f"{model.name}_uint8_flip_tta")


def export(wrapper, out_dir: Path) -> tuple[dict[str, Path], str | None]:
    """Write the three files; ({key: path}, why ONNX failed or None). An ONNX converter failure is recorded, not
    fatal: the SavedModel stays usable."""
    paths = {"keras": out_dir / KERAS_FILE, "savedmodel": out_dir / SAVEDMODEL_DIR}
    wrapper.save(paths["keras"])
    wrapper.export(str(paths["savedmodel"]), format="tf_saved_model", verbose=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's numpy FutureWarnings
            wrapper.export(str(out_dir / ONNX_FILE), format="onnx", verbose=False)
        paths["onnx"] = out_dir / ONNX_FILE
        return paths, None
    except Exception as e:  # ImportError (no tf2onnx) or any converter error: say which, keep the rest
        return paths, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run_keras(path: Path, x_nhwc: np.ndarray, batch: int) -> np.ndarray:
    model = load_trained(path)
    return np.asarray(model.predict(x_nhwc, batch_size=batch, verbose=0), dtype=np.float32)


def run_savedmodel(path: Path, x_nhwc: np.ndarray, batch: int) -> np.ndarray:
    loaded = tf.saved_model.load(str(path))  # keep it referenced: `serve` only borrows its variables
    return np.concatenate(
        [loaded.serve(tf.constant(x_nhwc[i : i + batch])).numpy() for i in range(0, len(x_nhwc), batch)]
    )


def load_note(key: str, path: str) -> str:
    if key == "keras":
        return f"import trainables.models.keras_resnet; keras.saving.load_model('{path}')(images)  # needs this repo"
    if key == "savedmodel":
        return f"tf.saved_model.load('{path}').serve(tf.constant(images))  # TensorFlow only, no project code"
    return f"onnxruntime.InferenceSession('{path}').run(None, {{session.get_inputs()[0].name: images}})[0]"
