"""The spread of per-image validation cross-entropy while a model trains: what `val_loss` can resolve.

A trial reports the mean cross-entropy over n validation images; its standard error is sd / sqrt(n), where sd is the
standard deviation of the per-image losses, which trials do not record. analysis/trials.py takes sd as
max(val_loss, LOSS_SD_FLOOR); this prints, after each epoch of the space's DEFAULTS, the mean, sd and sd/mean of the
per-image losses, to check the floor against (docs/search.md, docs/measurements.md).

    python bench/val_loss_spread.py --data-dir ../shared/data/cifar10 --epochs 20
    python bench/val_loss_spread.py --data-dir ../shared/data/cifar10 --subset 10000 --epochs 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from image_data.cache import load_dataset
    from search_spaces import get_space
    from trainables import torch_loop as T

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data_dir, subset=args.subset).search_arrays()
    space, defaults = get_space(args.model)
    config = {k: v for k, v in space.items() if not hasattr(v, "sample")}  # the constants
    config.update(defaults, model=args.model, max_epochs=args.epochs)
    device = torch.device("cpu")
    x_val, y_val = T.to_device_tensor(data["x_val"], device), T.to_device_tensor(data["y_val"], device)

    def report(result: dict, state: dict) -> None:
        model = T.build_model(args.model, len(data["classes"]), **{**config, "input_size": x_val.shape[-1]})
        model.load_state_dict(state["model"])
        model.eval()
        mean, std, _ = T.input_config(model, *T.norm_tensors(data["mean"], data["std"], device))
        logits = T.predict(model, x_val, mean=mean, std=std, device=device)
        losses = torch.nn.functional.cross_entropy(logits, y_val, reduction="none")
        m, sd = losses.mean().item(), losses.std().item()
        print(f"epoch {result['epoch']:2d}  n={len(losses)}  val_loss {m:.4f}  sd {sd:.4f}  sd/mean {sd / m:.2f}  "
              f"val_acc {result['val_acc']:.3f}", flush=True)  # fmt: skip

    T.fit(config, data, report, device=device)


if __name__ == "__main__":
    main()
