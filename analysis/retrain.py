"""Retrain the best config (or load its checkpoint) and predict the test set, for every framework in the registry.

Each framework's training module supplies the one loop (`fit`) and `predict`; this file only adapts them to one
shape: `Framework.fit -> (model, history, best_epoch)`, `Framework.scores -> np.ndarray (N, classes)`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables import metrics as M


@dataclass
class Run:
    model: object
    history: list[dict]  # one report per epoch (the trainables' metric names)
    best_epoch: int  # epoch whose weights the model holds


def _keep_best(on_epoch: Callable[[dict], None], snapshot: Callable[[dict], object]):
    """A fit() report callback keeping the weights of the lowest-val_loss epoch (the original project's rule)."""
    kept = {"loss": math.inf, "epoch": 0, "weights": None, "history": []}

    def report(result: dict, state) -> None:
        kept["history"].append(dict(result))
        if result[M.VAL_LOSS] < kept["loss"]:
            kept.update(loss=result[M.VAL_LOSS], epoch=result[M.EPOCH], weights=snapshot(state))
        on_epoch(result)

    return report, kept


class TorchFramework:
    name = "torch"
    weights_file = "model.pth"

    def __init__(self, device: str | None = None, threads: int = 1):
        import torch

        from trainables.torch_trainable import setup_device

        if device is None:  # report.py without --device: the GPU when there is one
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = setup_device(cpus=threads, gpu_fraction=1.0 if device != "cpu" else 0.0, device=device)

    def fit(self, config: dict, data: dict, epochs: int, on_epoch: Callable[[dict], None]) -> Run:
        from trainables.torch_trainable import fit

        report, kept = _keep_best(on_epoch, lambda state: copy.deepcopy(state["model"]))
        model = fit(config, data, report, device=self.device, max_epochs=epochs)
        if kept["weights"] is not None:
            model.load_state_dict(kept["weights"])
        return Run(model, kept["history"], kept["epoch"])

    def from_checkpoint(self, directory: str, config: dict, num_classes: int):
        from trainables.models import build_model
        from trainables.torch_trainable import load_checkpoint

        state = load_checkpoint(directory)
        # load_weights=False: a pretrained model's ImageNet file is not needed, the checkpoint has every tensor
        model = build_model(config["model"], num_classes, **{**config, "load_weights": False})
        model.load_state_dict(state["model"])
        return model.to(self.device), int(state["epoch"])

    def scores(self, model, x: np.ndarray, data: dict, config: dict) -> np.ndarray:
        from trainables.torch_trainable import eval_batch_size, norm_tensors, predict, to_device_tensor

        mean, std = norm_tensors(data["mean"], data["std"], self.device)
        batch = eval_batch_size(self.device, int(config["batch_size"]))
        x = to_device_tensor(x, self.device)
        return predict(model, x, mean=mean, std=std, device=self.device, batch_size=batch).cpu().numpy()

    def input_spec(self, model, data: dict) -> dict:
        """What the saved model must be fed: normalisation (the data set's, or ImageNet's for a pretrained
        model) and the input side it was trained at."""
        from trainables.torch_trainable import input_config, norm_tensors

        mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], self.device))
        side = size or int(data["x_train"].shape[-1])
        return {"mean": mean.flatten().tolist(), "std": std.flatten().tolist(), "input_size": side}

    def save(self, model, out_dir: Path) -> str:
        import torch

        # CPU tensors: a state dict saved from a GPU keeps CUDA tensors, which torch.load cannot place on a CPU-only
        # machine without map_location.
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / self.weights_file)
        return self.weights_file

    def load_note(self, config: dict, num_classes: int) -> str:
        kwargs = ", ".join(f"{k}={config[k]!r}" for k in ("dropout", "stem") if k in config)
        if config["model"] == "resnet18_pretrained":  # plain torchvision resnet18 keys: no project code needed
            build = f"import torchvision\nmodel = torchvision.models.resnet18(num_classes={num_classes})\n"
        else:
            build = (
                "from trainables.models import build_model\n"
                f"model = build_model({config['model']!r}, num_classes={num_classes}{', ' + kwargs if kwargs else ''})\n"
            )
        return (
            f"```python\nimport torch\n{build}"
            f"model.load_state_dict(torch.load('{self.weights_file}', map_location='cpu', weights_only=True))\nmodel.eval()\n"
            "# inputs: float NCHW images in [0, 1], resized to best_config.json's input['input_size'] and normalised\n"
            "# with its input['mean'] / input['std']\n```"
        )


class KerasFramework:
    """The Keras trainable's fit/predict/checkpoint functions (trainables/keras_trainable.py)."""

    name = "keras"
    weights_file = "model.keras"

    def __init__(self, device: str | None = None, threads: int = 1):
        from trainables.keras_trainable import setup_tensorflow, tf

        # without --device: the GPU when TF lists one; --device cuda/gpu on a machine without: one-line error
        use_gpu = device != "cpu" and (device is not None or bool(tf.config.list_physical_devices("GPU")))
        self.device = setup_tensorflow(cpus=threads, gpu_fraction=1.0 if use_gpu else 0.0)

    def fit(self, config: dict, data: dict, epochs: int, on_epoch: Callable[[dict], None]) -> Run:
        from trainables.keras_trainable import fit

        report, kept = _keep_best(on_epoch, lambda state: state["model"].get_weights())
        model = fit(config, data, report, device=self.device, max_epochs=epochs)
        if kept["weights"] is not None:
            model.set_weights(kept["weights"])
        return Run(model, kept["history"], kept["epoch"])

    def from_checkpoint(self, directory: str, config: dict, num_classes: int):
        from trainables.keras_trainable import load_checkpoint

        state = load_checkpoint(directory)
        return state["model"], int(state["epoch"])

    def scores(self, model, x: np.ndarray, data: dict, config: dict) -> np.ndarray:
        from trainables.keras_trainable import predict

        return predict(model, x, mean=data["mean"], std=data["std"])

    def input_spec(self, model, data: dict) -> dict:
        return {"mean": list(data["mean"]), "std": list(data["std"]), "input_size": int(data["x_train"].shape[-1])}

    def save(self, model, out_dir: Path) -> str:
        from trainables.keras_trainable import save_model

        return Path(save_model(model, str(out_dir / self.weights_file))).name

    def load_note(self, config: dict, num_classes: int) -> str:
        return (
            "```python\nimport keras\nimport trainables.models.keras_resnet  # registers the custom Block layer\n"
            f"model = keras.saving.load_model('{self.weights_file}')\n"
            "# inputs: NHWC float images in [0, 1], normalised with best_config.json's input['mean'] / input['std']; "
            "outputs: class probabilities\n```"
        )


FRAMEWORKS = {"torch": TorchFramework, "keras": KerasFramework}


def get_framework(name: str, device: str | None = None, threads: int = 1):
    """`threads`: CPU threads of the retrain (torch intra-op / TF intra- and inter-op)."""
    if name not in FRAMEWORKS:
        raise ValueError(f"no report support for framework {name!r}; known: {', '.join(FRAMEWORKS)}")
    return FRAMEWORKS[name](device, threads)


def default_threads() -> int:
    """The cores the 1-minute load average leaves free, at least 1. Oversubscribed cores are what hurts: on 2 busy
    cores (1-min load 2.8-12) LeNet-5 epochs ran 4.5-23x slower with 2 threads than with 1 (bench/threads.py,
    docs/first-run.md)."""
    import os

    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - os.getloadavg()[0] + 0.5)))
