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

    def __init__(self, device: str | None = None):
        import torch

        from trainables.torch_trainable import setup_device

        self.device = setup_device(cpus=torch.get_num_threads(), gpu_fraction=1.0 if device != "cpu" else 0.0,
                                   device=device)  # fmt: skip

    def fit(self, config: dict, data: dict, epochs: int, on_epoch: Callable[[dict], None]) -> Run:
        from trainables.torch_trainable import fit

        report, kept = _keep_best(on_epoch, lambda state: copy.deepcopy(state["model"]))
        model = fit({**config, "max_epochs": epochs}, data, report, device=self.device, max_epochs=epochs)
        if kept["weights"] is not None:
            model.load_state_dict(kept["weights"])
        return Run(model, kept["history"], kept["epoch"])

    def from_checkpoint(self, directory: str, config: dict, num_classes: int):
        from trainables.models import build_model
        from trainables.torch_trainable import load_checkpoint

        state = load_checkpoint(directory)
        model = build_model(config["model"], num_classes, **config)
        model.load_state_dict(state["model"])
        return model.to(self.device), int(state["epoch"])

    def scores(self, model, x: np.ndarray, data: dict, config: dict) -> np.ndarray:
        from trainables.torch_trainable import norm_tensors, predict, to_device_tensor

        mean, std = norm_tensors(data["mean"], data["std"], self.device)
        return predict(model, to_device_tensor(x, self.device), mean=mean, std=std, device=self.device).cpu().numpy()

    def save(self, model, out_dir: Path) -> str:
        import torch

        torch.save(model.state_dict(), out_dir / self.weights_file)
        return self.weights_file

    def load_note(self, config: dict, num_classes: int) -> str:
        kwargs = ", ".join(f"{k}={config[k]!r}" for k in ("dropout", "stem") if k in config)
        return (
            "```python\nimport torch\nfrom trainables.models import build_model\n"
            f"model = build_model({config['model']!r}, num_classes={num_classes}{', ' + kwargs if kwargs else ''})\n"
            f"model.load_state_dict(torch.load('{self.weights_file}', weights_only=True))\nmodel.eval()\n"
            "# inputs: float images in [0, 1], NCHW, normalised with the mean/std in best_config.json\n```"
        )


class KerasFramework:
    """The Keras trainable's fit/predict/checkpoint functions (trainables/keras_trainable.py)."""

    name = "keras"
    weights_file = "model.keras"

    def __init__(self, device: str | None = None):
        import os

        from trainables.keras_trainable import setup_tensorflow

        self.device = setup_tensorflow(cpus=os.cpu_count() or 1, gpu_fraction=0.0 if device == "cpu" else 1.0)

    def fit(self, config: dict, data: dict, epochs: int, on_epoch: Callable[[dict], None]) -> Run:
        from trainables.keras_trainable import fit

        report, kept = _keep_best(on_epoch, lambda state: state["model"].get_weights())
        model = fit({**config, "max_epochs": epochs}, data, report, device=self.device, max_epochs=epochs)
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

    def save(self, model, out_dir: Path) -> str:
        from trainables.keras_trainable import save_model

        return Path(save_model(model, str(out_dir / self.weights_file))).name

    def load_note(self, config: dict, num_classes: int) -> str:
        return (
            "```python\nimport keras\nimport trainables.models.keras_resnet  # registers the custom Block layer\n"
            f"model = keras.saving.load_model('{self.weights_file}')\n"
            "# inputs: NHWC float images in [0, 1], normalised with the mean/std in best_config.json; "
            "outputs: class probabilities\n```"
        )


FRAMEWORKS = {"torch": TorchFramework, "keras": KerasFramework}


def get_framework(name: str, device: str | None = None):
    if name not in FRAMEWORKS:
        raise ValueError(f"no report support for framework {name!r}; known: {', '.join(FRAMEWORKS)}")
    return FRAMEWORKS[name](device)
