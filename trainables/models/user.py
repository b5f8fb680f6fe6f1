"""Your own model: `--model path/to/file.py:function`, `package.module:function` or `timm:NAME[:pretrained]`.

The `--model` string is the model's whole identity: a trial on any node resolves it again from its config
(config["model"], plus config["framework"], which the driver detected). What happens where:

- The driver (run_search.py) makes a file's path absolute (`canonical`), imports the builder (a missing file or
  function is one line), builds the model with the first trial's config and runs a dummy batch through it (`check`:
  a builder that raises, returns something else than a torch nn.Module or a Keras model, or a model that fails on
  the batch is one line naming the file and the cause), all before Ray starts. experiment.json keeps the framework
  found and the builder file's sha256 (`source_record`); --resume and report.py stop in one line when the file has
  changed since (`changed`).
- Trials import a file as the copy Ray shipped to their node (`ship`: runtime_env py_modules, under the module name
  `module_name(path)`), not from the path, so neither a shared file system nor the driver's working directory is
  assumed, and an edit made during the search does not reach its trials. Without that copy (report.py, tests) the
  file is loaded from its path. A `package.module` found in the current directory (not the project's, which Ray's
  working_dir already ships, nor an installed package) is shipped whole the same way.
- The search space: the file's SPACE laid over the shared one (search_spaces/common.py), its DEFAULTS and
  MAX_EPOCHS, each optional (`own_space`); timm models use the shared space (from scratch) or the fine-tuning one
  (search_spaces/timm_pretrained.py).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from . import ModelSpec
from .refs import FILE_REF, MODULE_REF, TIMM_REF, ModelError, kind

# Keys the trainer sets in every trial config (search_driver/tuner.trial_constants): a SPACE may not name them.
RESERVED = ("model", "framework", "max_epochs", "seed", "weights_path", "device")
DUMMY_BATCH = 2
ROOT = Path(__file__).resolve().parents[2]


def canonical(ref: str) -> str:
    """The form trials get: a file's path made absolute (trials run in other working directories); others as is."""
    m = FILE_REF.match(ref) if kind(ref) == "file" else None
    if m is None:
        return ref
    return f"{Path(m['path']).expanduser().resolve()}:{m['function']}"


def _parts(ref: str) -> tuple[str, str]:
    """(path or module, function) of a file or module reference."""
    m = FILE_REF.match(ref) or MODULE_REF.match(ref)
    return (m["path"] if "path" in m.groupdict() else m["module"]), m["function"]


def slug(ref: str) -> str:
    """A short name for experiment folders: net-build, mypkg.nets-build, timm-resnet10t(-pretrained)."""
    k = kind(ref)
    if k == "timm":
        m = TIMM_REF.match(ref)
        return f"timm-{m['name']}" + ("-pretrained" if m["pretrained"] else "")
    target, function = _parts(ref)
    return f"{Path(target).stem if k == 'file' else target}-{function}"


def module_name(path: str) -> str:
    """The name a file is imported under, here and on every node: unique per path, a valid identifier."""
    stem = re.sub(r"\W", "_", Path(path).stem)
    return f"cifar_tune_model_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------------------------
# importing the builder


def _import_file(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses, pickling and Keras registration look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _find_module(module: str):
    """The spec of `package.module` as Python finds it; if not found, also in the current directory (where the user
    ran the command: run_search.py's own sys.path holds the project root, not the working directory). None: nowhere."""
    for _ in range(2):
        try:
            found = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            found = None
        if found is not None or os.getcwd() in sys.path:
            return found
        sys.path.append(os.getcwd())
    return None


KERAS_IMPORT = re.compile(rb"^\s*(?:import|from)\s+(?:keras|tensorflow)\b", re.M)


def _keras_first(path: str | None) -> None:
    """Keras and TensorFlow imported the project's way (trainables/keras_env.py: the backend, TF's start-up noise
    hidden, and triton's LLVM loaded before TF's, without which torch segfaults later) before a user's code that
    imports them itself."""
    try:
        uses_keras = path is not None and bool(KERAS_IMPORT.search(Path(path).read_bytes()))
    except OSError:
        return
    if uses_keras and "keras" not in sys.modules:
        from .. import keras_env  # noqa: F401


def load_module(ref: str):
    """The module holding the builder of a file or module reference (ModelError: one line)."""
    target, _ = _parts(ref)
    try:
        if kind(ref) == "module":
            found = _find_module(target)
            if found is None:
                raise ModelError(
                    f"--model {ref}: no module {target!r} importable from the project root, the current directory "
                    "or the installed packages"
                )
            _keras_first(found.origin)
            return importlib.import_module(target)
        name = module_name(target)
        if name in sys.modules:
            return sys.modules[name]
        shipped = importlib.util.find_spec(name)  # the copy Ray shipped to this node (runtime_env py_modules)
        if shipped is None and not Path(target).is_file():
            raise ModelError(f"--model {ref}: no such file {target}")
        _keras_first(shipped.origin if shipped else target)
        return importlib.import_module(name) if shipped else _import_file(target, name)
    except ModelError:
        raise
    except BaseException as e:  # a user's module can raise anything at import, SystemExit included
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ModelError(f"--model {ref}: importing {target} failed: {_first_line(e)}") from None


def load_builder(ref: str):
    """The builder function of `ref` (a file, module or timm reference)."""
    if kind(ref) == "timm":
        from .timm_models import builder

        return builder(ref)
    module = load_module(ref)
    target, function = _parts(ref)
    fn = getattr(module, function, None)
    if not callable(fn):
        own = [n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__]
        what = "no function" if fn is None else "a non-callable"
        raise ModelError(
            f"--model {ref}: {target} has {what} {function!r}"
            + (f" (its functions: {', '.join(own[:8])})" if own else " (it defines no function)")
        )
    return fn


_DETECTED: dict[str, str] = {}  # reference -> framework found by `check` in this process


def spec(ref: str, framework: str | None = None) -> ModelSpec:
    """The registry entry of a user reference; a file or module is imported (a missing one is a ModelError)."""
    k = kind(ref)
    if k == "timm":
        from .timm_models import check_name, parse

        name, pretrained = parse(ref)
        check_name(name)
        what = "pretrained weights, fine-tuned" if pretrained else "from scratch"
        return ModelSpec(ref, "torch", "timm_pretrained" if pretrained else "common", f"timm {name}, {what}", "timm")
    load_builder(ref)
    target, function = _parts(ref)
    return ModelSpec(ref, framework or _DETECTED.get(ref), "", f"{function}() of {target}", k)


# ---------------------------------------------------------------------------------------------------------------
# the driver's check: build once, one dummy batch; the framework is what the builder returned


def framework_of_object(obj) -> str | None:
    """The framework of a built model: "torch" (an nn.Module), "keras" (a Keras model), or None. Only frameworks
    already imported are asked: a builder that returns a Keras model has imported Keras."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(obj, keras.Model):
        return "keras"
    return None


def check(ref: str, num_classes: int, side: int, config: dict) -> str:
    """Build `ref` with `config` (the first trial's) for `num_classes` classes of side x side images, run a dummy
    batch through it; returns its framework. ModelError (one line naming the builder and the cause) otherwise."""
    from . import build_model

    where = f"--model {ref}"
    builder = load_builder(ref)
    given = {**config, "num_classes": num_classes, "input_size": side, "input_shape": (side, side, 3)}
    params = inspect.signature(builder).parameters.values()
    needed = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing := [n for n in needed if n not in given]:
        raise ModelError(
            f"{where}: the builder needs {', '.join(missing)}, which no config key gives; give "
            f"{'it a default' if len(missing) == 1 else 'them defaults'} or search {'it' if len(missing) == 1 else 'them'}"
            " in the file's SPACE"
        )
    kwargs = ", ".join(f"{k}={given[k]!r}" for k in inspect.signature(builder).parameters if k in given)
    try:
        model = build_model(ref, num_classes, **{k: v for k, v in given.items() if k != "num_classes"})
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{where}: the builder raised {_first_line(e)} (called with {kwargs})") from None
    framework = framework_of_object(model)
    if framework is None:
        raise ModelError(
            f"{where}: the builder returned {type(model).__module__}.{type(model).__qualname__}, not a torch "
            "nn.Module or a Keras model"
        )
    (_check_torch if framework == "torch" else _check_keras)(model, where, num_classes, side)
    _DETECTED[ref] = framework
    return framework


def _shape_error(where: str, out, batch: str, num_classes: int, what: str) -> ModelError:
    shape = tuple(getattr(out, "shape", ())) or type(out).__name__
    return ModelError(
        f"{where}: for a dummy batch of {batch} the model returned {shape}; expected ({DUMMY_BATCH}, {num_classes}), "
        f"{what} for each of the {num_classes} classes"
    )


def _check_torch(model, where: str, num_classes: int, side: int) -> None:
    import torch

    cfg = getattr(model, "pretrained_cfg", None)  # a pretrained model is fed at its own resolution (torch_loop)
    size = int(cfg["input_size"][-1]) if cfg else side
    batch = f"{DUMMY_BATCH}x3x{size}x{size} float images"
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.randn(DUMMY_BATCH, 3, size, size))
    except Exception as e:
        raise ModelError(f"{where}: the model fails on a dummy batch of {batch}: {_first_line(e)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (DUMMY_BATCH, num_classes):
        raise _shape_error(where, out, batch, num_classes, "one logit")


def _check_keras(model, where: str, num_classes: int, side: int) -> None:
    import numpy as np

    from ..keras_env import keras

    batch = f"{DUMMY_BATCH}x{side}x{side}x3 float images (NHWC)"
    try:
        out = keras.ops.convert_to_numpy(model(np.random.rand(DUMMY_BATCH, side, side, 3).astype("float32")))
    except Exception as e:
        raise ModelError(f"{where}: the model fails on a dummy batch of {batch}: {_first_line(e)}") from None
    finally:
        keras.backend.clear_session()
    if getattr(out, "shape", None) != (DUMMY_BATCH, num_classes):
        raise _shape_error(where, out, batch, num_classes, "one probability")
    sums = out.astype("float64").sum(axis=1)
    if (out < -1e-6).any() or not np.allclose(sums, 1.0, atol=1e-3):
        raise ModelError(
            f"{where}: the Keras model's outputs are not probabilities (rows sum to {sums.round(3).tolist()}): end it "
            "with a softmax (Dense(num_classes, activation='softmax')); the Keras loop's loss takes probabilities"
        )


# ---------------------------------------------------------------------------------------------------------------
# the search space of a file or module


def own_space(ref: str) -> tuple[dict, dict, int, str | None]:
    """(space, defaults, max_epochs, note): the module's SPACE laid over the shared space, DEFAULTS over the shared
    defaults (searched keys only), MAX_EPOCHS or the shared default; `note` names what the module does not define."""
    from ray.tune.search.sample import Domain

    from search_spaces import common

    module = load_module(ref)
    target, _ = _parts(ref)
    own = {name: getattr(module, name, None) for name in ("SPACE", "DEFAULTS", "MAX_EPOCHS")}
    for name in ("SPACE", "DEFAULTS"):
        if own[name] is not None and not isinstance(own[name], dict):
            raise ModelError(f"--model {ref}: {name} in {target} is a {type(own[name]).__name__}, not a dict")
    max_epochs = own["MAX_EPOCHS"]
    if max_epochs is not None and (not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 1):
        raise ModelError(f"--model {ref}: MAX_EPOCHS in {target} must be a positive int (got {max_epochs!r})")
    if reserved := [k for k in (own["SPACE"] or {}) if k in RESERVED]:
        raise ModelError(
            f"--model {ref}: SPACE in {target} names {', '.join(reserved)}, which the trainer sets itself "
            "(epochs: MAX_EPOCHS or --max-epochs; seed: --seed)"
        )
    space = {**common.COMMON, **(own["SPACE"] or {})}
    searched = {k: v for k, v in space.items() if isinstance(v, Domain)}
    defaults = {k: v for k, v in {**common.COMMON_DEFAULTS, **(own["DEFAULTS"] or {})}.items() if k in searched}
    # Tune's searchers take a whole first point: a searched key DEFAULTS leaves out starts at the builder's default
    params = inspect.signature(load_builder(ref)).parameters
    for key, domain in searched.items():
        if key not in defaults:
            default = params[key].default if key in params else inspect.Parameter.empty
            defaults[key] = default if _within(domain, default) else _middle(domain)
    note = None
    if missing := [name for name, value in own.items() if value is None]:
        uses = []
        if own["SPACE"] is None:
            uses.append("the shared space (search_spaces/common.py)")
        if own["DEFAULTS"] is None:
            uses.append("the shared first trial")
        if max_epochs is None:
            uses.append(f"{common.MAX_EPOCHS} epochs")
        note = f"note: {Path(target).name} has no {', '.join(missing)}: {', '.join(uses)}; see docs/own-model.md"
    return space, defaults, int(max_epochs or common.MAX_EPOCHS), note


def _within(domain, value) -> bool:
    from ray.tune.search import sample

    if isinstance(domain, sample.Categorical):
        return any(value == c and type(value) is type(c) for c in domain.categories)
    if isinstance(domain, (sample.Float, sample.Integer)) and isinstance(value, (int, float)):
        return domain.lower <= value <= domain.upper and not isinstance(value, bool)
    return False


def _middle(domain):
    """A first-trial value of a domain: its first choice, or the middle of its range (geometric on a log scale)."""
    from ray.tune.search import sample

    if isinstance(domain, sample.Categorical):
        return domain.categories[0]
    if isinstance(domain, (sample.Float, sample.Integer)):
        log = isinstance(domain.get_sampler(), sample.LogUniform)
        mid = (domain.lower * domain.upper) ** 0.5 if log else (domain.lower + domain.upper) / 2
        return int(mid) if isinstance(domain, sample.Integer) else float(mid)
    return domain.sample()


# ---------------------------------------------------------------------------------------------------------------
# provenance: what experiment.json records, and whether the file is still the same


def _builder_file(ref: str) -> str | None:
    if kind(ref) == "file":
        return _parts(ref)[0]
    if kind(ref) == "module":
        return getattr(load_module(ref), "__file__", None)
    return None


def source_record(ref: str) -> dict | None:
    """experiment.json's "model_source": where the builder came from and the sha256 of its file."""
    k = kind(ref)
    if k is None:
        return None
    if k == "timm":
        import timm

        from .timm_models import parse

        name, pretrained = parse(ref)
        return {"kind": "timm", "name": name, "pretrained": pretrained, "timm": timm.__version__}
    target, function = _parts(ref)
    path = _builder_file(ref)
    record = {"kind": k, "function": function, "path": path, "sha256": sha256(path) if path else None}
    if k == "module" and path:  # the folder it was imported from: report.py finds it from any directory
        package_file = Path(path).name == "__init__.py"
        record |= {"module": target, "import_root": str(Path(path).parents[target.count(".") + package_file])}
    return record


def changed(info: dict, doing: str) -> str | None:
    """One line when the builder file an experiment recorded is gone or differs now; None when it is the same.
    A module's recorded import folder is put on the import path (the command may run in another directory)."""
    record = info.get("model_source") or {}
    path, old = record.get("path"), record.get("sha256")
    if not path or not old:
        return None
    if (root := record.get("import_root")) and root not in sys.path:
        sys.path.append(root)
    if not Path(path).is_file():
        return (
            f"the model file {path} of this experiment no longer exists; {doing} needs the builder the search ran: "
            "put it back"
        )
    new = sha256(path)
    if new == old:
        return None
    return (
        f"the model file {path} changed since the search started (sha256 {old[:12]} then, {new[:12]} now); {doing} "
        "would not use the model the search ran: restore the file, or start a new search"
    )


# ---------------------------------------------------------------------------------------------------------------
# shipping to Ray's nodes


def _installed(path: Path) -> bool:
    """Inside the interpreter's own library folders (site-packages, the standard library)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(path.is_relative_to(Path(r).resolve()) for r in roots if r)


def ship(ref: str, scratch: Path) -> list[str]:
    """runtime_env["py_modules"] entries that bring `ref`'s code to every node: a file as a copy named
    `module_name(path)` (written into `scratch`), a module's top-level package when it is neither in the project
    (Ray's working_dir, or PYTHONPATH locally) nor installed. Ray uploads them at ray.init."""
    k = kind(ref)
    if k == "file":
        path = _parts(ref)[0]
        copy = Path(scratch) / f"{module_name(path)}.py"
        shutil.copyfile(path, copy)
        return [str(copy)]
    if k == "module":
        top = _parts(ref)[0].split(".")[0]
        load_module(ref)
        found = importlib.util.find_spec(top)
        location = Path(found.submodule_search_locations[0] if found.submodule_search_locations else found.origin)
        location = location.resolve()
        if location.is_relative_to(ROOT) or _installed(location):
            return []
        return [str(location)]
    return []


# ---------------------------------------------------------------------------------------------------------------
# how to rebuild the model without a search (model_card.json, the report's load note)


def rebuild(ref: str, config: dict, num_classes: int, side: int) -> dict:
    """{"model", "source", "python"}: the builder and the code that builds the architecture of a trained model
    (`side`: the images' side, for builders that take input_size or input_shape)."""
    if kind(ref) == "timm":
        from .timm_models import parse

        name, _ = parse(ref)
        return {
            "model": ref,
            "source": f"timm architecture {name!r}",
            "python": f"import timm\nmodel = timm.create_model({name!r}, num_classes={num_classes})",
        }
    target, function = _parts(ref)
    accepted = set(inspect.signature(load_builder(ref)).parameters) - {"num_classes"}
    given = {k: v for k, v in config.items() if k in accepted and k not in ("input_size", "input_shape")}
    size = {k: v for k, v in (("input_size", side), ("input_shape", (side, side, 3))) if k in accepted}
    kwargs = "".join(f", {k}={v!r}" for k, v in {**given, **size}.items())
    if kind(ref) == "file":
        load = (
            f"import importlib.util\nspec = importlib.util.spec_from_file_location('usermodel', {target!r})\n"
            "module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(module)\n"
            f"model = module.{function}(num_classes={num_classes}{kwargs})"
        )
        source = f"function {function}() of the file {target}"
    else:
        load = f"from {target} import {function}\nmodel = {function}(num_classes={num_classes}{kwargs})"
        source = f"function {function}() of the module {target}"
    return {"model": ref, "source": source, "python": load}
