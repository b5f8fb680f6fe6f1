"""The Keras (TensorFlow) training loop, with the torch loop's contract (`fit` / `predict` / checkpoints /
`save_model`), behind `trainables/framework.py`'s KerasFramework for the search trial and report.py. Same config
keys, same metric names (trainables/metric_names).

- `setup_tensorflow`: threads = the trial's CPUs; on a GPU share, cap TF's memory (it takes the whole GPU by
  default) and train in mixed precision. Must run before TF executes anything in the process.
- `fit`: one `model.fit` over a tf.data stream of epochs; a Keras callback validates and reports after each epoch.
  Shuffling and augmentation are stateless functions of (seed, epoch, step), so a resumed run sees the same batches
  as an uninterrupted one and the checkpoint needs only the model, its optimizer and the epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np

from . import metric_names as M
from .augment_spec import Augment, batch_bounds, epoch_steps
from .gpu_share import GPUUnavailableError, memory_cap
from .keras_env import keras, tf
from .models import build_model

MODEL_FILE = "model.keras"  # architecture + weights + optimizer state (Keras always saves the optimizer with it)
STATE_FILE = "state.json"  # {"epoch": k}: the rest of a checkpoint
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
EVAL_BATCH = 512
TF_DEVICES = {"cpu": "/CPU:0", "cuda": "/GPU:0", "gpu": "/GPU:0"}  # torch-style names report.py may pass
MIXED_POLICY = "mixed_float16"  # fp16 + loss scaling runs on every CUDA GPU TF supports (bf16 needs Ampere+)
PRECISION_OF_POLICY = {"mixed_float16": "fp16", "mixed_bfloat16": "bf16", "float32": "fp32"}  # metrics.PRECISION
POLICY_OF_PRECISION = {v: k for k, v in PRECISION_OF_POLICY.items()}
CPU_POLICY = "float32"  # not mixed_bfloat16, even where the CPU has bf16: see choose_policy


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow set-up: threads, GPU memory share, precision


def setup_tensorflow(cpus: float = 1, gpu_fraction: float = 0.0, precision: str | None = None) -> str:
    """Configure TF for a trial holding `cpus` CPUs and `gpu_fraction` of a GPU (or several whole GPUs); returns
    "gpu" or "cpu". Ray does not isolate GPU memory: with 0.25 GPU the trial limits itself to 25% of it.
    `precision` ("bf16", "fp16", "fp32"; e.g. a trial's recorded one for its retrain) overrides `choose_policy`."""
    threads = max(1, int(cpus))
    gpus = tf.config.list_physical_devices("GPU")
    if gpu_fraction > 0 and not gpus:
        require_gpu(gpu_fraction)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        if gpus and gpu_fraction <= 0:
            tf.config.set_visible_devices([], "GPU")  # a CPU trial must not reserve GPU memory
        elif gpus:
            limit_gpu_memory(gpus, gpu_fraction)
    except RuntimeError as e:  # TF already ran in this process (a reused worker): its first settings stay
        warnings.warn(f"TensorFlow was already initialised, keeping its thread/GPU settings: {e}", stacklevel=2)
    on_gpu = bool(gpus) and gpu_fraction > 0
    keras.mixed_precision.set_global_policy(choose_policy(on_gpu, precision))
    return "gpu" if on_gpu else "cpu"


def choose_policy(on_gpu: bool, precision: str | None = None) -> str:
    """The Keras dtype policy: mixed_float16 on a GPU, CPU_POLICY on a CPU, or the one of `precision`.

    float32 on a CPU even with native bf16: a model trained under mixed_bfloat16 exports an ONNX graph onnxruntime
    refuses to load, and the report must train as the trial did (docs/measurements.md, CPU bf16)."""
    if precision is not None:
        policies = {v: k for k, v in PRECISION_OF_POLICY.items()}
        if precision not in policies:
            raise ValueError(f"unknown precision {precision!r}; known: {', '.join(policies)}")
        return policies[precision]
    return MIXED_POLICY if on_gpu else CPU_POLICY


def require_gpu(gpu_fraction: float) -> None:
    """Called when TF lists no GPU for a trial holding `gpu_fraction` of one: raise GPUUnavailableError, naming
    whether this TF has no GPU support at all (tensorflow-cpu) or sees no device."""
    if not tf.sysconfig.get_build_info().get("is_cuda_build", False):
        cause = f"TensorFlow {tf.__version__} has no GPU support (tensorflow-cpu)"
        fix = "install tensorflow[and-cuda] on GPU nodes: pip install -r requirements-gpu.txt"
    else:
        cause = f"TensorFlow {tf.__version__} lists no GPU (no driver, CUDA libraries missing, or none visible)"
        fix = "check nvidia-smi and CUDA_VISIBLE_DEVICES on the node"
    raise GPUUnavailableError(
        f"this trial holds {gpu_fraction:g} GPU but {cause}; {fix}, or run with --gpus-per-trial 0"
    )


def limit_gpu_memory(gpus: list, fraction: float) -> None:
    """A share of one GPU: a logical device of (fraction x its total memory, minus the CUDA context's reserve).
    Whole GPUs: allocate on demand."""
    for index, gpu in enumerate(gpus):
        total = gpu_total_memory_mb(index) if fraction < 1 else None
        if total:
            mib = int(total * memory_cap(fraction, total * 2**20))
            limit = tf.config.LogicalDeviceConfiguration(memory_limit=mib)
            tf.config.set_logical_device_configuration(gpu, [limit])
        else:
            if fraction < 1:
                warnings.warn(
                    "GPU memory size unknown (no nvidia-smi): using memory growth, not a hard cap", stacklevel=2
                )
            tf.config.experimental.set_memory_growth(gpu, True)


def gpu_total_memory_mb(index: int = 0) -> int | None:
    """Total memory (MiB) of the `index`-th visible GPU, from nvidia-smi; TF can only tell after it has initialised
    the device, which is too late to limit it. None when nvidia-smi is missing or fails."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    device = visible[index] if index < len(visible) else str(index)  # Ray sets CUDA_VISIBLE_DEVICES per trial
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", device],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return int(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# optimiser and schedule from a config (the torch keys, Keras semantics)


def make_schedule(config: dict, steps_per_epoch: int, max_epochs: int):
    """Per-step learning rate, matching the torch schedules: constant, step = x0.1 every 7 epochs, cosine to 0,
    onecycle = linear warm-up from lr/25 over 30% of the steps, then cosine to 0 (torch's OneCycle warms up along
    a cosine; Keras has no OneCycle)."""
    name, lr = config.get("schedule", "constant"), float(config["lr"])
    total = max(1, steps_per_epoch * max_epochs)
    if name == "constant":
        return lr
    if name == "step":
        return keras.optimizers.schedules.ExponentialDecay(lr, 7 * steps_per_epoch, 0.1, staircase=True)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    if name == "onecycle":
        warmup = max(1, int(0.3 * total))
        return keras.optimizers.schedules.CosineDecay(
            lr / 25, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup
        )
    raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")


def make_optimizer(config: dict, steps_per_epoch: int, max_epochs: int) -> keras.optimizers.Optimizer:
    """Keras applies `weight_decay` decoupled (w -= lr * wd * w) for every optimizer, so "adam" with a decay is
    AdamW here (torch's Adam adds L2 to the gradient instead); "adamw" is accepted for configs shared with torch.
    config "ema_decay": the optimizer's own EMA of the weights (use_ema), updated every step, as the torch loop's."""
    name = config.get("optimizer", "adam")
    lr = make_schedule(config, steps_per_epoch, max_epochs)
    wd = float(config.get("weight_decay", 0.0)) or None
    ema_decay = float(config.get("ema_decay") or 0.0)
    ema = {"use_ema": True, "ema_momentum": ema_decay} if ema_decay else {}
    if name in ("adam", "adamw"):
        return keras.optimizers.Adam(lr, weight_decay=wd, **ema)
    if name == "sgd":
        return keras.optimizers.SGD(
            lr, momentum=float(config.get("momentum", 0.9)), nesterov=True, weight_decay=wd, **ema
        )
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


# ---------------------------------------------------------------------------------------------------------------
# data: a tf.data stream of augmented, normalised NHWC batches


def translate(x, max_dy: int, max_dx: int, seed, fill: str):
    """Shift each image of a (B, H, W, C) batch by its own random (dy, dx) in [-max, max]; fill "zero" or
    "nearest" (repeat the edge). Two batched gathers, no per-image Python."""
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    s_y, s_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    dy = tf.random.stateless_uniform([b], s_y, -max_dy, max_dy + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([b], s_x, -max_dx, max_dx + 1, dtype=tf.int32)
    rows = tf.range(h)[None, :] - dy[:, None]  # (B, H): source row of each output row
    cols = tf.range(w)[None, :] - dx[:, None]
    out = tf.gather(x, tf.clip_by_value(rows, 0, h - 1), axis=1, batch_dims=1)
    out = tf.gather(out, tf.clip_by_value(cols, 0, w - 1), axis=2, batch_dims=1)
    if fill == "zero":
        inside = ((rows >= 0) & (rows < h))[:, :, None, None] & ((cols >= 0) & (cols < w))[:, None, :, None]
        out = tf.where(inside, out, tf.zeros_like(out))  # not a multiply: oneDNN logs an error for uint8 Mul
    return out


def random_flip(x, seed):
    mask = tf.random.stateless_uniform([tf.shape(x)[0]], seed) < 0.5
    return tf.where(mask[:, None, None, None], tf.reverse(x, axis=[2]), x)


def cutout(x, size: int, seed):
    """Zero a size x size square (clipped at the border) at a random centre of each image, as the torch cutout."""
    b, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    s_y, s_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cy = tf.random.stateless_uniform([b, 1, 1], s_y, 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([b, 1, 1], s_x, 0, w, dtype=tf.int32)
    ys, xs = tf.range(h)[None, :, None], tf.range(w)[None, None, :]
    lo_y, lo_x = cy - size // 2, cx - size // 2
    inside = (ys >= lo_y) & (ys < lo_y + size) & (xs >= lo_x) & (xs < lo_x + size)
    return x * tf.cast(~inside, x.dtype)[..., None]


def normalize(x_uint8, mean, std, channels_first: bool = False):
    """uint8 NHWC (NCHW) -> float32 standardised per channel; mean/std in [0, 1] units, as the torch side."""
    shape = (1, -1, 1, 1) if channels_first else (1, 1, 1, -1)
    mean, std = tf.reshape(tf.constant(mean, tf.float32), shape), tf.reshape(tf.constant(std, tf.float32), shape)
    return (tf.cast(x_uint8, tf.float32) / 255.0 - mean) / std


def prepare_batch(x_uint8, mean, std, augment: Augment | None = None, seed=None):
    """The one path from uint8 NHWC images to model input; `augment=None` for evaluation. Geometry on uint8,
    cutout after normalising so it zeroes to the mean (as the torch side)."""
    if augment is not None:
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        if augment.crop_padding:
            x_uint8 = translate(x_uint8, augment.crop_padding, augment.crop_padding, seeds[0], "zero")
        if augment.shift:
            h, w = x_uint8.shape[1], x_uint8.shape[2]
            x_uint8 = translate(x_uint8, round(augment.shift * h), round(augment.shift * w), seeds[1], "nearest")
        if augment.flip:
            x_uint8 = random_flip(x_uint8, seeds[2])
    x = normalize(x_uint8, mean, std)
    if augment is not None and augment.cutout:
        x = cutout(x, augment.cutout, seeds[3])
    return x


def train_stream(x_nhwc, y, *, num_classes, batch_size, epochs: range, seed: int, augment: Augment, mean, std):
    """Batches (x, one-hot y) for `epochs`, epoch after epoch: shuffle, batch (every image once per epoch, in
    `epoch_steps` batches of nearly equal size, as the torch loop's), augment, prefetch. Epoch e's order and
    augmentation depend only on (seed, e), so resuming at epoch k reproduces what an uninterrupted run would have
    done."""
    n = len(x_nhwc)
    steps = epoch_steps(n, batch_size)
    sizes = tf.constant([j - i for i, j in (batch_bounds(n, steps, k) for k in range(steps))], tf.int64)
    x, y = tf.constant(x_nhwc), tf.constant(y, tf.int32)
    seed64 = tf.constant(seed, tf.int64)

    def one_epoch(epoch):
        # Dataset.shuffle takes only a Python seed; a stateless permutation can depend on the epoch tensor.
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), tf.stack([seed64, epoch]))
        batches = tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(order, sizes)).enumerate()
        return batches.map(lambda step, idx: (epoch, step, idx))

    def load(epoch, step, idx):
        key = tf.stack([seed64, epoch * 1_000_003 + step])  # stateless: a pure function
        xb = prepare_batch(tf.gather(x, idx), mean, std, augment, key)
        return xb, tf.one_hot(tf.gather(y, idx), num_classes)

    stream = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
    return stream.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def to_nhwc(x_nchw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x_nchw).transpose(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------------------------
# prediction and evaluation


def _predict(model, x, *, mean, std, nchw: bool, batch_size: int = EVAL_BATCH) -> np.ndarray:
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    if nchw:  # transposed per batch, after normalising: TF's graph optimiser would move a transpose next to a cast
        # onto the uint8 data, where oneDNN logs an error line (and falls back to slower code)
        ds = ds.map(lambda b: tf.transpose(normalize(b, mean, std, channels_first=True), [0, 2, 3, 1]))
    else:
        ds = ds.map(lambda b: prepare_batch(b, mean, std))
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float32)


def predict(
    model, x_uint8_nchw: np.ndarray, *, mean, std, batch_size: int = EVAL_BATCH, flip_tta: bool = False
) -> np.ndarray:
    """Class **probabilities** (softmax output, float32, shape (N, num_classes)) for uint8 NCHW images, in inference
    mode, without augmentation. argmax / top-k work on them as on logits. `flip_tta`: the mean of the probabilities
    of the images and of their horizontal mirrors (the torch loop's `flip_average`)."""
    probs = _predict(model, x_uint8_nchw, mean=mean, std=std, nchw=True, batch_size=batch_size)
    if flip_tta:
        mirrored = np.ascontiguousarray(x_uint8_nchw[..., ::-1])
        probs = (probs + _predict(model, mirrored, mean=mean, std=std, nchw=True, batch_size=batch_size)) / 2
    return probs


def ensemble(models: list) -> keras.Model:
    """One model whose class probabilities are the mean of `models`' (each outputs probabilities): the torch loop's
    ProbabilityMean. Saved, loaded and exported as one functional model holding its members."""
    first = getattr(models[0], "inputs", None)  # None for a subclassed model: any height and width then
    inputs = keras.Input(shape=tuple(first[0].shape[1:]) if first else (None, None, 3), name="images")
    # the same builder names both members alike, and a functional model's parts need unique names: each functional
    # member is re-wrapped under its own name (the same layers and weights)
    named = [
        keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}") if getattr(m, "inputs", None) else m
        for i, m in enumerate(models)
    ]
    probs = keras.layers.Average(name="ensemble_mean")([m(inputs) for m in named])
    return keras.Model(inputs, probs, name=f"ensemble_of_{len(models)}")


def evaluate(model, x_nhwc, y, *, mean, std) -> dict:
    """Plain cross-entropy (no label smoothing, so val_loss compares across trials) and accuracy, as the torch side."""
    probs = _predict(model, x_nhwc, mean=mean, std=std, nchw=False)
    y = np.asarray(y)
    picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)  # Keras' own clip of probabilities
    return {M.VAL_LOSS: float(-np.log(picked).mean()), M.VAL_ACC: float((probs.argmax(1) == y).mean())}


# ---------------------------------------------------------------------------------------------------------------
# the loop of epochs, shared by search and report


class ReportEachEpoch(keras.callbacks.Callback):
    """After each epoch: validate, build the metrics dict with the torch loop's keys, call
    `report(metrics, {"model": model, "epoch": epoch})`, and stop training if the loss diverged."""

    def __init__(
        self, report: Callable[[dict, dict], None], validate: Callable[[keras.Model], dict] | None, images: int
    ):
        super().__init__()
        self.report, self.validate, self.images = report, validate, images

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        train_seconds = time.perf_counter() - self._start
        result = M.epoch_result(
            train_loss=float(logs["loss"]),
            train_acc=float(logs["acc"]),
            validate=(lambda: self.validate(self.model)) if self.validate else None,
            epoch=epoch + 1,  # Keras counts from 0
            lr=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            images=self.images,
            train_seconds=train_seconds,
            started=self._start,
            precision=PRECISION_OF_POLICY.get(self.model.dtype_policy.name, self.model.dtype_policy.name),
        )
        self.report(result, {"model": self.model, "epoch": epoch + 1})
        if result[M.DIVERGED]:
            self.model.stop_training = True


class ProgressEachBatch(keras.callbacks.Callback):
    """`progress(epoch, batches done, batches in the epoch)` after every training batch (in-epoch progress)."""

    def __init__(self, progress: Callable[[int, int, int], None], steps_per_epoch: int):
        super().__init__()
        self.progress, self.steps, self.epoch = progress, steps_per_epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1  # Keras counts from 0

    def on_train_batch_end(self, batch, logs=None):
        self.progress(self.epoch, batch + 1, self.steps)


def fit(
    config: dict,
    data: dict,
    report: Callable[[dict, dict], None],
    *,
    device: str | None = None,
    checkpoint: dict | None = None,
    max_epochs: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> keras.Model:
    """Train `config["model"]` on data["x_train"] (uint8 NCHW, converted once to NHWC) and validate on
    data["x_val"], for up to max_epochs. After each epoch calls `report(metrics, state)`; `state` is
    {"model": the live keras.Model, "epoch": k}: write it with `save_checkpoint(state, directory)` inside the
    callback. Resumes after `checkpoint["epoch"]` (a `load_checkpoint` result). Stops early if the loss diverges.
    `device` ("cpu", "cuda"/"gpu", or a TF name like "/GPU:1") pins the work; None lets TF place it (GPU when one
    is visible). Call `setup_tensorflow` first. config "ema_decay": the optimizer keeps a moving average of the
    weights (`averaged_weights`), which Keras' fit copies into the model's trainable weights when it ends.
    `progress(epoch, batches done, batches in the epoch)`: after every training batch, as the torch loop's.
    """
    if config.get("precision"):  # forced (report.py retrains in the trial's recorded precision); else setup's policy
        keras.mixed_precision.set_global_policy(POLICY_OF_PRECISION[config["precision"]])
    horizon = int(config["max_epochs"])  # the lr schedule's; max_epochs only says where to stop (as the torch fit)
    max_epochs = int(max_epochs or horizon)
    seed = int(config.get("seed", 0))
    keras.utils.set_random_seed(seed)  # weight init; batches and augmentation are seeded statelessly
    x_train, y_train = to_nhwc(data["x_train"]), np.asarray(data["y_train"])
    x_val, y_val = to_nhwc(data["x_val"]), np.asarray(data["y_val"])
    mean, std = tuple(data["mean"]), tuple(data["std"])
    num_classes = len(data["classes"])
    batch_size = min(int(config["batch_size"]), len(x_train))
    steps_per_epoch = epoch_steps(len(x_train), batch_size)

    with tf.device(TF_DEVICES.get(device, device)) if device else nullcontext():
        if checkpoint is not None:
            model, start_epoch = checkpoint["model"], int(checkpoint["epoch"])
        else:
            model, start_epoch = build_model(config["model"], num_classes, **config, input_shape=x_train.shape[1:]), 0
            model.compile(
                optimizer=make_optimizer(config, steps_per_epoch, horizon),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=float(config.get("label_smoothing", 0.0))),
                metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
            )
        if start_epoch >= max_epochs:
            return model
        stream = train_stream(
            x_train,
            y_train,
            num_classes=num_classes,
            batch_size=batch_size,
            seed=seed,
            epochs=range(start_epoch + 1, max_epochs + 1),
            augment=Augment.from_config(config),
            mean=mean,
            std=std,
        )
        # no validation images (report.py's refit on train + validation): no validation, NaN val metrics
        validate = (lambda m: evaluate(m, x_val, y_val, mean=mean, std=std)) if len(y_val) else None
        callback = ReportEachEpoch(report, validate, images=len(x_train))
        # steps_per_epoch makes Keras keep one iterator over the whole stream instead of restarting it each epoch.
        model.fit(
            stream,
            epochs=max_epochs,
            initial_epoch=start_epoch,
            steps_per_epoch=steps_per_epoch,
            callbacks=[callback, *([ProgressEachBatch(progress, steps_per_epoch)] if progress else [])],
            shuffle=False,
            verbose=0,  # the stream is shuffled already
        )
    return model


# ---------------------------------------------------------------------------------------------------------------
# weight averaging (config "ema_decay": the optimizer's use_ema)

BN_IMAGES = 10_000  # as the torch loop's: BatchNorm statistics of averaged weights from this many training images


def averaged_weights(model: keras.Model) -> list[np.ndarray]:
    """`model.get_weights()` with the trainable weights replaced by the optimizer's moving average, leaving `model`
    as it was: the average is swapped in through the public `finalize_variable_values` (what `fit` does at its end)
    and swapped out again."""
    live = model.get_weights()
    model.optimizer.finalize_variable_values(model.trainable_weights)
    averaged = model.get_weights()
    model.set_weights(live)
    return averaged


def batch_norm_layers(layer) -> list:
    """Every BatchNormalization layer inside `layer`: through models' `layers` and layers' public attributes
    (a custom block's own sub-layers, e.g. keras_resnet.Block.bn1)."""
    found, seen, todo = [], set(), [layer]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, keras.layers.BatchNormalization):
            found.append(node)
        children = list(getattr(node, "layers", None) or [])
        children += [v for k, v in vars(node).items() if not k.startswith("_") and isinstance(v, keras.layers.Layer)]
        todo += children
    return found


def recompute_bn(model: keras.Model, config: dict, data: dict, images: int = BN_IMAGES) -> None:
    """BatchNorm moving statistics for `model`'s (averaged) weights: the plain mean over batches of `images` random
    training images fed as training feeds them (torch.optim.swa_utils.update_bn's rule). Each layer's momentum is
    set to k/(k+1) before batch k, which turns Keras' moving average into that mean; restored afterwards."""
    layers = batch_norm_layers(model)
    if not layers:
        return
    seed = int(config.get("seed", 0))
    pick = np.random.default_rng(seed).permutation(len(data["y_train"]))[:images]
    batch_size = min(int(config["batch_size"]), len(pick))
    stream = train_stream(
        to_nhwc(data["x_train"][pick]),
        np.asarray(data["y_train"])[pick],
        num_classes=len(data["classes"]),
        batch_size=batch_size,
        epochs=range(1, 2),
        seed=seed,
        augment=Augment.from_config(config),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
    )
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, np.float32))
        bn.moving_variance.assign(np.ones(bn.moving_variance.shape, np.float32))
    try:
        for k, (xb, _) in enumerate(stream):
            for bn in layers:
                bn.momentum = k / (k + 1)  # read by each eager call: the first batch replaces, later ones average
            model(xb, training=True)
    finally:
        for bn, m in zip(layers, momenta, strict=True):
            bn.momentum = m


def averaged_model(model: keras.Model, weights: list[np.ndarray], config: dict, data: dict) -> keras.Model:
    """A copy of `model` (same architecture, not compiled) holding `weights`, BatchNorm statistics recomputed."""
    copy = keras.models.clone_model(model)
    copy.set_weights(weights)
    recompute_bn(copy, config, data)
    return copy


# ---------------------------------------------------------------------------------------------------------------
# checkpoints and the final model


def save_checkpoint(state: dict, directory: str) -> None:
    """`model.keras` (weights, optimizer variables incl. its step count, i.e. the schedule position) + the epoch."""
    state["model"].save(os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        json.dump({"epoch": int(state["epoch"])}, f)


def load_checkpoint(directory: str) -> dict:
    """{"model": compiled keras.Model with its optimizer state, "epoch": k}, loaded into memory (the directory may
    be a temporary one). Call `setup_tensorflow` before, on a GPU."""
    model = keras.saving.load_model(os.path.join(directory, MODEL_FILE), compile=True)
    with open(os.path.join(directory, STATE_FILE)) as f:
        epoch = int(json.load(f)["epoch"])
    return {"model": model, "epoch": epoch}


def save_model(model: keras.Model, path: str) -> str:
    """Write the trained model as `.keras`: to `path` if it ends in .keras, else to path/model.keras."""
    target = path if str(path).endswith(".keras") else os.path.join(path, MODEL_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    model.save(target)
    return target
