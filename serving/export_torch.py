"""torch: the trained network behind its own evaluation preprocessing, as a torch.export program and an ONNX file.

`WithPreprocessing` is the model as training evaluated it (`trainables.augment.prepare_batch` without augmentation:
normalise, then for pretrained models resize to their resolution), plus the softmax, behind a uint8 NHWC input; with
`flip_tta`, the report's flip test-time augmentation (`trainables.torch_loop.flip_average`) too.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.augment import prepare_batch
from trainables.torch_device import choose_precision
from trainables.torch_loop import flip_average, input_config, norm_tensors, predict

PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
CPU = torch.device("cpu")


class WithPreprocessing(nn.Module):
    """uint8 RGB (N, S, S, 3) -> float32 class probabilities (N, classes)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor, size: int | None, flip_tta: bool):
        super().__init__()
        self.model, self.size, self.flip_tta = model, size, flip_tta
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = prepare_batch(images.permute(0, 3, 1, 2), self.mean, self.std, size=self.size)
        logits = flip_average(self.model, x) if self.flip_tta else self.model(x).float()
        return torch.softmax(logits, dim=1)


def load_trained(path: Path, config: dict, num_classes: int) -> nn.Module:
    """report.py's model.pth (a state dict) into its architecture; a pretrained model needs no ImageNet file."""
    from trainables.framework import ensemble_members
    from trainables.models import build_model
    from trainables.torch_loop import ProbabilityMean

    def one():
        return build_model(config["model"], num_classes, **{**config, "load_weights": False})

    members = ensemble_members(config)  # an ensemble's state dict holds its members' under members.0., members.1.
    model = ProbabilityMean([one() for _ in range(members)]) if members else one()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def on_cpu(model: nn.Module) -> nn.Module:
    """A float32, contiguous-format CPU copy: the files are made and checked on the CPU (a CUDA report trains in
    channels_last; its predict runs under bf16 autocast, which a 1e-4 check must not compare against)."""
    return copy.deepcopy(model).to(CPU, memory_format=torch.contiguous_format).float().eval()


def reference(model: nn.Module, x_nchw: np.ndarray, mean, std, flip_tta: bool = False) -> np.ndarray:
    """The training framework's own answer: trainables.torch_loop.predict (the search's and the report's
    evaluation path), softmaxed, in fp32 (a CPU with native bf16 would otherwise predict under bf16 autocast)."""
    m, s = norm_tensors(mean, std, CPU)
    fp32 = choose_precision(CPU, "fp32")
    logits = predict(model, torch.from_numpy(x_nchw), mean=m, std=s, device=CPU, flip_tta=flip_tta, precision=fp32)
    return torch.softmax(logits, 1).numpy()


def wrap(model: nn.Module, mean, std, flip_tta: bool = False) -> tuple[WithPreprocessing, int | None]:
    m, s, size = input_config(model, *norm_tensors(mean, std, CPU))
    return WithPreprocessing(model, m, s, size, flip_tta).eval(), size


def export(wrapper: WithPreprocessing, side: int, out_dir: Path) -> dict[str, Path]:
    """Write model.pt2 and model.onnx with a dynamic batch axis; returns {key: path}."""
    example = torch.zeros((2, side, side, 3), dtype=torch.uint8)  # batch 2: export specialises sizes 0 and 1
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, out_dir / PROGRAM_FILE)
        # The dynamo exporter (the legacy TorchScript one is deprecated in torch 2.14) from the same program.
        torch.onnx.export(
            program,
            (example,),
            out_dir / ONNX_FILE,
            dynamo=True,
            input_names=["images"],
            output_names=["probabilities"],
            external_data=False,
            verbose=False,
        )
    return {"torch_export": out_dir / PROGRAM_FILE, "onnx": out_dir / ONNX_FILE}


def run_program(path: Path, x_nhwc: np.ndarray, batch: int) -> np.ndarray:
    module = torch.export.load(str(path)).module()
    with torch.inference_mode():
        return np.concatenate(
            [module(torch.from_numpy(x_nhwc[i : i + batch])).numpy() for i in range(0, len(x_nhwc), batch)]
        )


def load_note(key: str, path: str) -> str:
    if key == "torch_export":
        return f"torch.export.load('{path}').module()(images)  # torch >= 2.6, no project code"
    return f"onnxruntime.InferenceSession('{path}').run(None, {{'images': images}})[0]"
