"""The torch/Keras seam: the one contract both training loops meet, and the one place that picks a loop.

The search trial (`tune_trial.train_trial`), the report's retrain (`analysis/retrain.py`) and the CLI's checks ask
`framework_of(model)` or `get_framework(name)` for a `Framework` and call only what the protocol below names; nothing
else dispatches on "torch" vs "keras". The implementations import their framework on first use, so a torch search
never imports TensorFlow and vice versa.

Shapes, the same for both: images are uint8 NCHW numpy arrays (the data cache's layout), `predict` returns class
probabilities (N, classes) float32, `fit` calls `report(metrics, state)` after every epoch with the metric names of
`trainables/metric_names.py` and a checkpoint `state` that `save_checkpoint` writes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .models import get_spec

Report = Callable[[dict, dict], None]  # (metrics of one epoch, checkpoint state holding the live model)
Progress = Callable[[int, int, int], None]  # (epoch, batches done, batches in the epoch), after every training batch


@runtime_checkable
class Framework(Protocol):
    name: str  # "torch" or "keras": experiment.json's "framework"
    model_file: str  # what save_model writes in the report folder
    supports_lr_find: bool  # the LR range test (torch-lr-finder) drives a torch model only
    measures_gpu_packing: bool  # --gpus-per-trial auto measures peak memory with torch's allocator statistics
    device: Any  # set by setup_trial / setup_local: a torch.device, or a TF device name (None: TF places it)

    def setup_trial(self, cpus: float, gpu_fraction: float, device: str | None = None) -> None:
        """Threads and GPU share inside a Ray trial; fails with one line when a GPU share finds no usable GPU."""

    def require_gpu(self, share: float) -> None:
        """Raise GPUUnavailableError (one line: cause and fix) unless this process can train on its GPU share."""

    def setup_local(self, device: str | None = None, threads: int = 1) -> None:
        """report.py / predict: `device` or, without one, the GPU when there is one; `threads` CPU threads."""

    def fit(
        self,
        config: dict,
        data: dict,
        report: Report,
        *,
        checkpoint=None,
        max_epochs: int | None = None,
        progress: Progress | None = None,
    ) -> Any:
        """Train for epochs 1..max_epochs (schedule horizon config["max_epochs"]), resuming after a checkpoint;
        `progress(epoch, batches done, batches in the epoch)` after every training batch."""

    def predict(
        self, model, x_uint8_nchw: np.ndarray, data: dict, config: dict, *, flip_tta: bool = False
    ) -> np.ndarray:
        """Class probabilities (N, classes), eval mode, no augmentation; `flip_tta`: the mean of the probabilities of
        the images and of their horizontal mirrors."""

    def weights_of(self, state: dict) -> Any:
        """A copy of the weights in an epoch's checkpoint `state`, for keeping the best epoch as training goes on."""

    def averaged_weights_of(self, state: dict) -> Any:
        """A copy of the moving average of the weights in `state` (a fit with config "ema_decay")."""

    def averaged_model(self, model, weights, config: dict, data: dict) -> Any:
        """A copy of `model` holding averaged `weights`, its BatchNorm statistics recomputed on data["x_train"]."""

    def set_weights(self, model, weights) -> None: ...

    def ensemble(self, models: list) -> Any:
        """One model whose class probabilities are the mean of `models`' (the report's retrain and refit)."""

    def save_checkpoint(self, state: dict, directory: str) -> None: ...

    def load_checkpoint(self, directory: str) -> dict: ...

    def from_checkpoint(self, directory: str, config: dict, num_classes: int) -> tuple[Any, int]:
        """(model on this device, epoch) from a trial checkpoint folder."""

    def save_model(self, model, out_dir: Path) -> str:
        """Write the trained model into `out_dir`; returns the file name."""

    def input_spec(self, model, data: dict) -> dict:
        """{"mean", "std", "input_size"}: what the saved model must be fed."""

    def load_note(self, config: dict, num_classes: int) -> str:
        """Markdown: the code that loads the saved model without this project's training code."""


class _Loop:
    """What both implementations hand straight to their loop module (imported on first use)."""

    loop: str  # module of this package holding fit, save_checkpoint and load_checkpoint
    device: Any

    def _loop(self):
        return importlib.import_module(f"{__package__}.{self.loop}")

    def fit(
        self,
        config: dict,
        data: dict,
        report: Report,
        *,
        checkpoint=None,
        max_epochs: int | None = None,
        progress: Progress | None = None,
    ):
        return self._loop().fit(
            config, data, report, device=self.device, checkpoint=checkpoint, max_epochs=max_epochs, progress=progress
        )

    def save_checkpoint(self, state: dict, directory: str) -> None:
        self._loop().save_checkpoint(state, directory)

    def load_checkpoint(self, directory: str) -> dict:
        return self._loop().load_checkpoint(directory)


class TorchFramework(_Loop):
    """trainables/torch_loop.py behind the seam."""

    loop = "torch_loop"
    name = "torch"
    model_file = "model.pth"
    supports_lr_find = True
    measures_gpu_packing = True

    def __init__(self):
        self.device = None

    def require_gpu(self, share: float) -> None:
        from .torch_device import require_cuda

        require_cuda(share)

    def setup_trial(self, cpus: float, gpu_fraction: float, device: str | None = None) -> None:
        from .torch_device import setup_device

        self.device = setup_device(cpus, gpu_fraction, device)

    def setup_local(self, device: str | None = None, threads: int = 1) -> None:
        import torch

        from .torch_device import setup_device

        if device is None:  # without --device: the GPU when there is one
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = setup_device(cpus=threads, gpu_fraction=1.0 if device != "cpu" else 0.0, device=device)

    def predict(
        self, model, x_uint8_nchw: np.ndarray, data: dict, config: dict, *, flip_tta: bool = False
    ) -> np.ndarray:
        import torch

        from .torch_device import choose_precision
        from .torch_loop import eval_batch_size, norm_tensors, predict, to_device_tensor

        mean, std = norm_tensors(data["mean"], data["std"], self.device)
        batch = eval_batch_size(self.device, int(config["batch_size"]))
        x = to_device_tensor(x_uint8_nchw, self.device)
        precision = choose_precision(self.device, config.get("precision"))  # the training's, as the report chose it
        logits = predict(
            model, x, mean=mean, std=std, device=self.device, batch_size=batch, precision=precision, flip_tta=flip_tta
        )
        return torch.softmax(logits, dim=1).cpu().numpy()

    def weights_of(self, state: dict):
        return {k: v.detach().clone() for k, v in state["model"].items()}  # state["model"]: the live state dict

    def averaged_weights_of(self, state: dict):
        return {k: v.detach().clone() for k, v in state["ema"].items()}  # the AveragedModel's live state dict

    def averaged_model(self, model, weights, config: dict, data: dict):
        import copy

        from .torch_loop import recompute_bn

        averaged = copy.deepcopy(model)
        averaged.load_state_dict(weights)
        recompute_bn(averaged, config, data, self.device)
        return averaged

    def set_weights(self, model, weights) -> None:
        model.load_state_dict(weights)

    def ensemble(self, models: list):
        from .torch_loop import ProbabilityMean

        return ProbabilityMean(models).to(self.device).eval()

    def from_checkpoint(self, directory: str, config: dict, num_classes: int):
        from .models import build_model

        state = self.load_checkpoint(directory)
        # load_weights=False: a pretrained model's ImageNet file is not needed, the checkpoint has every tensor
        model = build_model(config["model"], num_classes, **{**config, "load_weights": False})
        model.load_state_dict(state["model"])
        return model.to(self.device), int(state["epoch"])

    def save_model(self, model, out_dir: Path) -> str:
        import torch

        # CPU tensors: a state dict saved from a GPU keeps CUDA tensors, which torch.load cannot place on a CPU-only
        # machine without map_location.
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(out_dir) / self.model_file)
        return self.model_file

    def input_spec(self, model, data: dict) -> dict:
        # normalisation: the data set's, or ImageNet's for a pretrained model; side: what the model was trained at
        from .torch_loop import input_config, norm_tensors

        mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], self.device))
        side = size or int(data["x_train"].shape[-1])
        return {"mean": mean.flatten().tolist(), "std": std.flatten().tolist(), "input_size": side}

    def load_note(self, config: dict, num_classes: int) -> str:
        kwargs = ", ".join(f"{k}={config[k]!r}" for k in ("dropout", "stem") if k in config)
        if config["model"] == "resnet18_pretrained":  # plain torchvision resnet18 keys: no project code needed
            build = f"import torchvision\nmodel = torchvision.models.resnet18(num_classes={num_classes})\n"
        elif get_spec(config["model"]).kind != "builtin":  # a user's builder or timm: its own code, not ours
            from .models.user import rebuild

            build = rebuild(config["model"], config, num_classes, int(config["input_size"]))["python"] + "\n"
        else:
            build = (
                "from trainables.models import build_model\n"
                f"model = build_model({config['model']!r}, num_classes={num_classes}{', ' + kwargs if kwargs else ''})\n"
            )
        if members := ensemble_members(config):
            build = build.replace("model = ", "member = lambda: ", 1) + (
                "from trainables.torch_loop import ProbabilityMean  # the mean of the members' probabilities\n"
                f"model = ProbabilityMean([member() for _ in range({members})])\n"
            )
        return (
            f"```python\nimport torch\n{build}"
            f"model.load_state_dict(torch.load('{self.model_file}', map_location='cpu', weights_only=True))\nmodel.eval()\n"
            "# inputs: float NCHW images in [0, 1], resized to best_config.json's input['input_size'] and normalised\n"
            "# with its input['mean'] / input['std']\n```"
        )


class KerasFramework(_Loop):
    """trainables/keras_loop.py behind the seam."""

    loop = "keras_loop"
    name = "keras"
    model_file = "model.keras"
    supports_lr_find = False
    measures_gpu_packing = False

    def __init__(self):
        self.device = None

    def require_gpu(self, share: float) -> None:
        from .keras_loop import require_gpu, tf

        if not tf.config.list_physical_devices("GPU"):
            require_gpu(share)

    def setup_trial(self, cpus: float, gpu_fraction: float, device: str | None = None) -> None:
        from .keras_env import keras
        from .keras_loop import setup_tensorflow

        # Tune reuses worker processes (reuse_actors): drop the previous trial's models and Keras state first (this
        # also resets the dtype policy, so it comes before the set-up).
        keras.backend.clear_session(free_memory=True)
        if device == "cpu":  # --train-on-cpu: a GPU share on purpose without a GPU (logical GPUs)
            gpu_fraction = 0.0
        setup_tensorflow(cpus, gpu_fraction)  # before TF builds anything
        self.device = device

    def setup_local(self, device: str | None = None, threads: int = 1) -> None:
        from .keras_env import tf
        from .keras_loop import setup_tensorflow

        # without --device: the GPU when TF lists one; --device cuda/gpu on a machine without: one-line error
        use_gpu = device != "cpu" and (device is not None or bool(tf.config.list_physical_devices("GPU")))
        self.device = setup_tensorflow(cpus=threads, gpu_fraction=1.0 if use_gpu else 0.0)

    def predict(
        self, model, x_uint8_nchw: np.ndarray, data: dict, config: dict, *, flip_tta: bool = False
    ) -> np.ndarray:
        from .keras_loop import predict

        return predict(model, x_uint8_nchw, mean=data["mean"], std=data["std"], flip_tta=flip_tta)

    def weights_of(self, state: dict):
        return state["model"].get_weights()  # numpy copies of the live keras.Model's weights

    def averaged_weights_of(self, state: dict):
        from .keras_loop import averaged_weights

        return averaged_weights(state["model"])

    def averaged_model(self, model, weights, config: dict, data: dict):
        from .keras_loop import averaged_model

        return averaged_model(model, weights, config, data)

    def set_weights(self, model, weights) -> None:
        model.set_weights(weights)

    def ensemble(self, models: list):
        from .keras_loop import ensemble

        return ensemble(models)

    def from_checkpoint(self, directory: str, config: dict, num_classes: int):
        get_spec(config["model"]).load()  # a user's file first: loading needs its custom layers registered
        state = self.load_checkpoint(directory)
        return state["model"], int(state["epoch"])

    def save_model(self, model, out_dir: Path) -> str:
        from .keras_loop import save_model

        return Path(save_model(model, str(Path(out_dir) / self.model_file))).name

    def input_spec(self, model, data: dict) -> dict:
        return {"mean": list(data["mean"]), "std": list(data["std"]), "input_size": int(data["x_train"].shape[-1])}

    def load_note(self, config: dict, num_classes: int) -> str:
        if get_spec(config["model"]).kind != "builtin":  # a user's file: import it first if it defines layers
            target = config["model"].rsplit(":", 1)[0]
            register = f"# import {target} first if it defines custom layers (register_keras_serializable)\n"
        else:
            register = "import trainables.models.keras_resnet  # registers the custom Block layer\n"
        return (
            f"```python\nimport keras\n{register}"
            f"model = keras.saving.load_model('{self.model_file}')\n"
            "# inputs: NHWC float images in [0, 1], normalised with best_config.json's input['mean'] / input['std']; "
            "outputs: class probabilities\n```"
        )


FRAMEWORKS: dict[str, type] = {"torch": TorchFramework, "keras": KerasFramework}


def ensemble_members(config: dict) -> int:
    """How many networks a report's shipped ensemble holds (best_config.json's final_model; 0: not an ensemble)."""
    return len((((config.get("final_model") or {}).get("ensemble")) or {}).get("members", []))


def get_framework(name: str) -> Framework:
    """A fresh, not yet set up implementation of framework `name`."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}")
    return FRAMEWORKS[name]()


def framework_of(model: str, framework: str | None = None) -> Framework:
    """The framework that trains `model` (trainables/models: its ModelSpec). A user's builder file says it only once
    built: the driver's check found it and recorded it, and trials get it as config["framework"] (`framework`)."""
    name = get_spec(model).framework or framework
    if name is None:
        raise ValueError(f"the framework of {model} is known once the driver has built it (trainables/models/user.py)")
    return get_framework(name)
