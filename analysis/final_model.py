"""The model report.py ships: the options on top of the plain retrain, the data a refit trains on, and which models
the report's table compares.

- refit: the winning config retrained on train + validation (every labelled image the search had), for the epoch
  the search found best. No validation data is left, so no epoch is chosen: the count is fixed beforehand.
- weight averaging: an exponential moving average of the weights, updated every step (torch.optim.swa_utils /
  Keras' use_ema), BatchNorm statistics recomputed for the averaged weights.
- flip TTA: the mean of the class probabilities of each image and of its horizontal mirror, only for a config
  that trained with flips (config["flip"]); inside the exported files too.
- ensemble: the mean of the class probabilities of the plain retrain (or the best trial's checkpoint) and the refit,
  two models the report has anyway; one model in the saved and exported files. Needs the refit.

Each option is evaluated on a training the report runs anyway: averaging and TTA on the plain retrain (and on the
refit), the refit on its own training. The table therefore costs one extra training per seed with --refit and
none without.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-step EMA decay: 1 / (1 - decay) = 1,000 steps is ~3 LeNet5 epochs at batch 128 (docs/report.md: the choice).
EMA_DECAY = 0.999
# The defaults, chosen by measurement on the README's LeNet5 run (docs/report.md, docs/measurements.md).
DEFAULTS = {"refit": True, "ema": False, "flip_tta": True, "ensemble": True}


@dataclass(frozen=True)
class Options:
    refit: bool
    ema_decay: float  # 0: no weight averaging
    flip_tta: bool  # asked for; applies only to a config that trained with flips (`tta_applies`)
    ensemble: bool = False  # the plain model and the refit, their probabilities averaged

    def tta_applies(self, config: dict) -> bool:
        return self.flip_tta and bool(config.get("flip", False))

    def record(self, config: dict, refit_epochs: int | None, refit_images: int | None) -> dict:
        """What the shipped model carries, for metrics.json, best_config.json and the model card."""
        return {
            "refit": {"epochs": refit_epochs, "images": refit_images, "data": "train + validation"}
            if self.refit
            else None,
            "weight_averaging": {"method": "EMA", "decay": self.ema_decay, "batchnorm": "recomputed"}
            if self.ema_decay
            else None,
            "flip_tta": self.tta_applies(config),
            "flip_tta_asked": self.flip_tta,
            "ensemble": {"members": ["plain", "refit"], "of": "class probabilities"} if self.ensemble else None,
        }


def options_from_args(args) -> Options:
    """report.py's --refit / --ema / --flip-tta (each None unless given: the defaults below). A checkpoint cannot be
    refitted or averaged: with --no-retrain those two are off, and asking for them is an error."""
    from .trials import ReportError  # pandas and pyarrow: not for report.py --help, which reads DEFAULTS

    refit = DEFAULTS["refit"] if args.refit is None else args.refit
    ema = DEFAULTS["ema"] if args.ema is None else args.ema
    tta = DEFAULTS["flip_tta"] if args.flip_tta is None else args.flip_tta
    ensemble = DEFAULTS["ensemble"] if args.ensemble is None else args.ensemble
    if args.no_retrain:
        if args.refit or args.ema or args.ensemble:
            raise ReportError(
                "--refit, --ema and --ensemble train a model; --no-retrain evaluates a checkpoint: drop one of them"
            )
        refit = ema = ensemble = False
    if ensemble and not refit:
        if args.ensemble:
            raise ReportError("--ensemble averages the retrain and the refit: it needs the refit (drop --no-refit)")
        ensemble = False
    decay = args.ema_decay if args.ema_decay is not None else EMA_DECAY
    if not 0 < decay < 1:
        raise ReportError(f"--ema-decay must be between 0 and 1 (got {decay})")
    return Options(refit=refit, ema_decay=decay if ema else 0.0, flip_tta=tta, ensemble=ensemble)


def refit_data(data: dict) -> dict:
    """train + validation as one training set and no validation images: every labelled image once, the test set
    never. The normalisation stays the training split's, as the search's trials and the exported files have it."""
    x = np.concatenate([data["x_train"], data["x_val"]])
    y = np.concatenate([data["y_train"], data["y_val"]])
    return {**data, "x_train": x, "y_train": y, "x_val": x[:0], "y_val": y[:0]}


@dataclass(frozen=True)
class Variant:
    """One model of the table: which training (the refit or the plain retrain), averaged weights or not, TTA."""

    key: str
    label: str
    refit: bool = False
    averaged: bool = False
    tta: bool = False
    ensemble: bool = False  # the plain model and the refit together (`refit` is then False: both are used)

    @property
    def uses_refit(self) -> bool:
        return self.refit or self.ensemble


def variants(options: Options, config: dict, retrained: bool = True) -> list[Variant]:
    """The table's rows: the plain retrain (or the best trial's checkpoint), + each option alone, and the shipped
    model (all options) last. With one option or none the last row is the shipped model already."""
    tta = options.tta_applies(config)
    rows = [Variant("plain", "plain retrain" if retrained else "the best trial's checkpoint")]
    if options.refit:
        rows.append(Variant("refit", "+ refit on train + validation", refit=True))
    if options.ema_decay:
        rows.append(Variant("ema", f"+ EMA of the weights (decay {options.ema_decay:g})", averaged=True))
    if tta:
        rows.append(Variant("flip_tta", "+ flip test-time augmentation", tta=True))
    if options.ensemble and options.refit:
        rows.append(Variant("ensemble", "+ ensemble of it and the refit (mean of probabilities)", ensemble=True))
    if len(rows) > 2:
        ens = options.ensemble and options.refit
        shipped = dict(refit=options.refit and not ens, averaged=bool(options.ema_decay), tta=tta, ensemble=ens)
        rows.append(Variant("shipped", "all of them: the shipped model", **shipped))
    return rows


def options_words(fm: dict) -> str:
    """What the shipped model carries, in a few words (report.md, report.py's result line, the model card)."""
    parts = []
    if fm.get("refit"):
        epochs = fm["refit"]["epochs"]
        parts.append(
            f"refit on train + validation ({fm['refit']['images']:,} images, {epochs} epoch{'s' * (epochs != 1)})"
        )
    if fm.get("weight_averaging"):
        parts.append(f"EMA of the weights (decay {fm['weight_averaging']['decay']:g})")
    if fm.get("flip_tta"):
        parts.append("flip test-time augmentation")
    if fm.get("ensemble"):
        parts.append("an ensemble of the plain model and the refit")
    return ", ".join(parts) if parts else "the plain retrain, no option"
