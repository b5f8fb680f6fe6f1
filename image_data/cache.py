"""Image data: CIFAR-10 through torchvision or any image folder, decoded once to uint8 arrays and cached.

Everything a trial needs lives in one `Dataset` of NCHW uint8 arrays. The driver decodes (or loads the cache),
splits train/val, computes the normalisation, and puts the train/val arrays in the Ray object store once; trials
read them zero-copy. The test split never goes to the search (`Dataset.search_arrays()` leaves it out).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import decode as images

CACHE_VERSION = 2  # bump when the decoded format changes, so old caches are ignored (2: centre crop, skip list)
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
VAL_FRACTION = 0.1  # 5,000 of CIFAR-10's 50,000 training images, the original split
DEFAULT_SIDE = 32  # CIFAR-sized: what lenet5, resnet18 and keras_resnet18 are built for
HEADER_SAMPLE = 64  # image headers read to learn a folder's typical size (for the default --image-size)
FOLDER_LAYOUT = f"train/<class>/ and test/<class>/ images, or CIFAR-10's {CIFAR_FOLDER}/"


class DataError(Exception):
    """Bad or missing data: the message is one line saying what is wrong and what to do."""


@dataclass
class Dataset:
    x_train: np.ndarray  # (N, 3, H, W) uint8
    y_train: np.ndarray  # (N,) int64
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: tuple[float, float, float]  # per channel, in [0, 1] units, from the training split
    std: tuple[float, float, float]
    source: dict = field(default_factory=dict)  # kind, path, image_size: saved in experiment.json
    skipped: list[dict] = field(default_factory=list)  # files not used: {path (relative), reason, detail}
    num_files: int = 0  # files found in the class folders, skipped ones included

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def search_arrays(self) -> dict:
        """What the search's trials get through the object store: train/val and normalisation, no test set."""
        return {
            "x_train": self.x_train,
            "y_train": self.y_train,
            "x_val": self.x_val,
            "y_val": self.y_val,
            "classes": list(self.classes),
            "mean": self.mean,
            "std": self.std,
        }

    def summary(self) -> str:
        return (
            f"{self.source.get('kind')} {self.source.get('path')}: {len(self.classes)} classes, "
            f"{len(self.y_train)} train / {len(self.y_val)} val / {len(self.y_test)} test images, "
            f"{self.x_train.shape[2]}x{self.x_train.shape[3]}"
        )


@dataclass(frozen=True)
class DecodePlan:
    """What a load will hold, known from the file listing before anything is decoded (for memory checks)."""

    kind: str
    image_size: int
    num_train: int  # training files (train + val), before --subset
    num_test: int
    subset: int | None

    @property
    def bytes_per_image(self) -> int:
        return self.image_size * self.image_size * 3  # uint8 N x N x 3

    @property
    def total_bytes(self) -> int:
        """The decoded arrays of every split, as the driver holds them."""
        return (self.num_train + self.num_test) * self.bytes_per_image

    @property
    def search_images(self) -> int:
        if not self.subset:
            return self.num_train
        return min(self.num_train, self.subset + max(1, self.subset // 10))

    @property
    def search_bytes(self) -> int:
        """Train + val arrays, what the search puts in Ray's object store once."""
        return self.search_images * self.bytes_per_image


def default_cache_dir() -> Path:
    return Path(os.environ.get("CIFAR_TUNE_CACHE", Path.home() / ".cache" / "cifar-tune"))


# ---------------------------------------------------------------------------------------------------------------
# Public entry point


def load_dataset(
    data_dir: str | os.PathLike,
    seed: int = 0,
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    subset: int | None = None,
    *,
    test_subset: int | None = None,
    model_side: int = DEFAULT_SIDE,
    strict: bool = False,
    download: bool = False,
    check: Callable[[DecodePlan], None] | None = None,
    quiet: bool = False,
) -> Dataset:
    """Load (decode or read the cache), split stratified train/val by `seed`, and compute the normalisation.

    `image_size`: side N of the stored N x N images of an image folder; None: `DEFAULT_SIDE`, or for a model that
    wants more (`model_side`) the folder's typical shorter side, up to `model_side`. CIFAR-10 batches stay 32.
    `subset` keeps at most that many training images and a tenth as many validation images, stratified (used by
    --smoke-test); the test set stays whole unless `test_subset` says otherwise.
    `strict`: any unreadable file is a DataError instead of being skipped (Dataset.skipped lists them).
    `download`: fetch CIFAR-10 into `data_dir` (an existing empty folder is a download target too).
    `check(plan)` runs after the file listing, before anything is decoded or read from the cache.
    """
    loaded = load_arrays(
        data_dir,
        image_size,
        cache_dir,
        model_side=model_side,
        download=download,
        check=check,
        subset=subset,
        quiet=quiet,
    )
    if strict and loaded.skipped:
        raise DataError(
            f"--strict-data: {len(loaded.skipped)} unusable files: {_listing(loaded.skipped, 10)}; "
            "fix or remove them, or run without --strict-data to skip them"
        )
    x, y, x_test, y_test, classes = loaded.x_train, loaded.y_train, loaded.x_test, loaded.y_test, loaded.classes
    tr, va = stratified_split(y, VAL_FRACTION, seed)
    if subset:
        tr = _stratified_take(tr, y[tr], subset, seed)
        va = _stratified_take(va, y[va], max(len(classes), subset // 10), seed)
    if test_subset:
        te = _stratified_take(np.arange(len(y_test)), y_test, max(len(classes), test_subset), seed)
        x_test, y_test = x_test[te], y_test[te]
    mean, std = channel_stats(x[tr])
    source = {
        **loaded.source,
        "seed": seed,
        "subset": subset,
        "test_subset": test_subset,
        "num_test_full": int(len(loaded.y_test)),
    }
    return Dataset(
        x_train=x[tr],
        y_train=y[tr],
        x_val=x[va],
        y_val=y[va],
        x_test=x_test,
        y_test=y_test,
        classes=classes,
        mean=mean,
        std=std,
        source=source,
        skipped=loaded.skipped,
        num_files=loaded.num_files,
    )


@dataclass
class Loaded:
    x_train: np.ndarray  # the whole training split (train + val)
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    source: dict
    skipped: list[dict]
    num_files: int


def load_arrays(
    data_dir,
    image_size: int | None = None,
    cache_dir=None,
    *,
    model_side: int = DEFAULT_SIDE,
    download: bool = False,
    check=None,
    subset: int | None = None,
    quiet: bool = False,
) -> Loaded:
    """The decoded splits, from the cache when it is fresh."""
    root = Path(data_dir).expanduser().resolve()
    kind = detect_kind(root, download)
    if kind == "download":
        download_cifar10(root)
        kind = "cifar10"
    if kind == "cifar10":
        if image_size not in (None, DEFAULT_SIDE):
            raise DataError(
                f"CIFAR-10's batches are {DEFAULT_SIDE}x{DEFAULT_SIDE}; --image-size is for image folders "
                f"(train/<class>/, test/<class>/)"
            )
        image_size = DEFAULT_SIDE
        files = _cifar_files(root)
        fingerprint = _fingerprint([(str(p), *_stat(p)) for p in files])
        per_image = 3 * DEFAULT_SIDE * DEFAULT_SIDE + 1  # a batch file: pixels and a label per image, plus a header
        train_bytes = sum(p.stat().st_size for p in files if p.name.startswith("data_batch"))
        test_bytes = sum(p.stat().st_size for p in files if p.name == "test_batch")
        plan = DecodePlan(kind, image_size, train_bytes // per_image, test_bytes // per_image, subset)
    else:
        files = _folder_files(root)
        image_size = image_size or choose_image_size(files, model_side)
        fingerprint = _fingerprint(files["stats"])
        plan = DecodePlan(kind, image_size, len(files["train"]), len(files["test"]), subset)
    num_classes = 10 if kind == "cifar10" else len(files["classes"])
    if subset and subset < num_classes:  # before decoding: a subset without every class is no subset of this data
        raise DataError(
            f"--subset {subset} is fewer training images than the {num_classes} classes (each needs one);"
            f" use --subset {num_classes} or more"
        )
    if check is not None:
        check(plan)
    parts = [CACHE_VERSION, kind, str(root), image_size, fingerprint, images.pixel_limit()]
    key = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()) / f"{kind}-{image_size}-{key}.npz"
    source = {"kind": kind, "path": str(root), "image_size": image_size, "cache": str(cache)}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        n = plan.num_train + plan.num_test
        if not quiet:
            what = "reading CIFAR-10's" if kind == "cifar10" else "decoding"
            print(
                f"{what} {n:,} images once ({image_size}x{image_size}), cached for next time",
                file=sys.stderr,
                flush=True,
            )
        arrays = _decode_cifar(root) if kind == "cifar10" else _decode_folder(files, image_size, quiet)
        _atomic_savez(cache, arrays)
    classes = [str(c) for c in arrays.pop("classes")]
    skipped = json.loads(str(arrays.pop("skipped", "[]")))
    if kind == "folder":  # from this listing, not the cache: subfolders are outside the cache key
        skipped += [
            {"path": d, "reason": images.SUBFOLDER, "detail": "subfolders of a class folder are not read"}
            for d in files["subfolders"]
        ]
    num_files = int(arrays.pop("num_files", len(arrays["y_train"]) + len(arrays["y_test"])))
    if kind == "folder":
        _check_classes(root, files, classes, arrays, skipped)
    return Loaded(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes, source, skipped, num_files
    )


def detect_kind(root: Path, download: bool = False) -> str:
    """'folder' (train/<class>/...), 'cifar10' (cifar-10-batches-py present) or 'download'.

    Download only where asked: with `download`, or into an existing empty folder. A path that does not exist is
    an error, so a mistyped --data-dir creates nothing and starts no download."""
    if root.exists() and not root.is_dir():
        raise DataError(f"--data-dir {root} is a file; give a folder with {FOLDER_LAYOUT}")
    if not root.exists():
        if download:
            return "download"
        raise DataError(
            f"--data-dir {root} does not exist; it must hold {FOLDER_LAYOUT} (--download fetches CIFAR-10 into it)"
        )
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise DataError(f"{root}/train exists but {root}/test does not; an image folder needs both splits")
        return "folder"
    if (root / CIFAR_FOLDER).is_dir():
        return "cifar10"
    if any(root.iterdir()):
        found = ", ".join(sorted(p.name for p in root.iterdir())[:5])
        raise DataError(
            f"{root} is neither an image folder (train/<class>/*, test/<class>/*) nor a CIFAR-10 root "
            f"({CIFAR_FOLDER}/); it holds: {found}"
        )
    return "download"


def choose_image_size(files: dict, model_side: int = DEFAULT_SIDE) -> int:
    """The default --image-size of a folder: DEFAULT_SIDE, or for a model wanting more, the folder's median shorter
    side (from a sample of headers) clipped to [DEFAULT_SIDE, model_side]: never stored larger than the files are."""
    if model_side <= DEFAULT_SIDE:
        return DEFAULT_SIDE
    paths = [p for _, p in files["train"]]
    step = max(1, len(paths) // HEADER_SAMPLE)
    sides = [s for s in (images.native_side(p) for p in paths[::step][:HEADER_SAMPLE]) if s]
    native = int(np.median(sides)) if sides else DEFAULT_SIDE
    return int(min(max(native, DEFAULT_SIDE), model_side))


def skip_summary(skipped: list[dict], num_files: int, where: str = "", width: int = 120) -> str:
    """Two console lines of at most `width` columns: the counts, then the first few files and why:
    'skipped 3 of 1,204 files (2 unreadable, 1 not images); <where>' / '  a.jpg (truncated), b.png (corrupt), ...'."""
    subs = sum(s["reason"] == images.SUBFOLDER for s in skipped)
    counts = Counter(SKIP_GROUPS.get(s["reason"], s["reason"]) for s in skipped if s["reason"] != images.SUBFOLDER)
    files = len(skipped) - subs
    head = f"skipped {files:,} of {num_files:,} files ({', '.join(f'{n} {r}' for r, n in counts.most_common())})"
    if not files:
        head = "skipped"
    if subs:
        head += f"{' and' if files else ''} {subs} subfolder{'s' if subs > 1 else ''} of class folders (not read)"
    head += f"; {where}" if where else ""
    listing = "  "
    for i, s in enumerate(skipped):
        item = f"{s['path']} ({s['reason']})" + (", " if i < len(skipped) - 1 else "")
        if len(listing) + len(item) > width - 3:
            listing += "..."
            break
        listing += item
    return f"{head}\n{listing.rstrip(', ')}"


# Reasons counted together on the console line (each file's own reason is listed after the counts).
SKIP_GROUPS = {
    images.TRUNCATED: "unreadable",
    images.CORRUPT: "unreadable",
    images.EMPTY: "unreadable",
    images.APPLEDOUBLE: "not images",
    images.HIDDEN: "not images",
    images.NOT_IMAGE: "not images",
}


def _listing(skipped: list[dict], n: int) -> str:
    items = [f"{s['path']} ({s['reason']})" for s in skipped[:n]]
    return ", ".join(items) + (f" and {len(skipped) - n} more" if len(skipped) > n else "")


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), stratified by class, fixed by seed (CIFAR-10: 45,000 / 5,000, 500 per class)."""
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    if counts[present].min() < 2:
        raise DataError("every class needs at least 2 training images to split off a stratified validation set")
    # Largest-remainder allocation: exactly round(N * fraction) validation images, at least one per class.
    n_val = max(int(round(len(y) * val_fraction)), len(present))
    share = counts[present] * n_val / len(y)
    per_class = np.clip(np.floor(share).astype(int), 1, counts[present] - 1)
    for i in np.argsort(-(share - np.floor(share))):
        if per_class.sum() >= n_val:
            break
        if per_class[i] < counts[present[i]] - 1:
            per_class[i] += 1
    rng = np.random.default_rng(seed)
    val = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(present, per_class, strict=True)]
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(y)), val, assume_unique=True)
    return train, val


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images, in [0, 1] units.

    From a 256-bin histogram per channel: exact for uint8 and ~5x faster than float64 mean/std on 45k images.
    """
    v = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        m = (counts * v).sum() / n
        means.append(float(m))
        stds.append(float(max(np.sqrt((counts * (v - m) ** 2).sum() / n), 1e-3)))
    return tuple(means), tuple(stds)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 through torchvision


def download_cifar10(root: Path) -> None:
    """torchvision's own download; offline it fails within a second with one line saying where to put the data.

    A failed download leaves nothing behind: folders it created are removed, and so is what it wrote into a folder
    that was empty."""
    from torchvision.datasets import CIFAR10

    created = root
    while not created.parent.exists():
        created = created.parent
    existed = root.exists()
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # URLError, socket errors, checksum errors: all mean "no usable data here"
        if not existed:
            shutil.rmtree(created, ignore_errors=True)
        else:  # it was empty before (detect_kind): empty it again
            for p in root.iterdir():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"CIFAR-10 could not be downloaded into {root} ({reason}); fetch {CIFAR_URL} "
            f"on a connected machine and extract it into {root}, or pass --data-dir DIR with train/<class>/ and "
            f"test/<class>/ image folders"
        ) from None


CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]  # the python version's pickled batches (cifar-10-batches-py)
CIFAR_TEST = ["test_batch"]
CIFAR_META = "batches.meta"


def _cifar_files(root: Path) -> list[Path]:
    files = [root / CIFAR_FOLDER / n for n in [*CIFAR_TRAIN, *CIFAR_TEST, CIFAR_META]]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise DataError(f"{root}/{CIFAR_FOLDER} is incomplete (missing {', '.join(missing)}); re-extract {CIFAR_URL}")
    return files


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_batches(root: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW images and int64 labels of CIFAR-10's pickled batches: each a dict of `data` (N x 3072, the red,
    green and blue 32x32 planes of each image in a row) and `labels`. Read directly (no md5 of 180 MB per decode)."""
    batches = [_unpickle(root / CIFAR_FOLDER / n) for n in names]
    x = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    y = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    return np.ascontiguousarray(x), y


def _decode_cifar(root: Path) -> dict:
    try:
        x_train, y_train = _cifar_batches(root, CIFAR_TRAIN)
        x_test, y_test = _cifar_batches(root, CIFAR_TEST)
        classes = _unpickle(root / CIFAR_FOLDER / CIFAR_META)["label_names"]
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise DataError(f"{root}/{CIFAR_FOLDER} could not be read ({e}); re-extract {CIFAR_URL}") from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "classes": np.asarray(classes)}


# ---------------------------------------------------------------------------------------------------------------
# Image folders: DIR/train/<class>/*, DIR/test/<class>/*


def _folder_files(root: Path) -> dict:
    """The listing of an image folder, sorted (so it is deterministic):
    {'train'/'test': [(class, path)] of files to decode, 'classes': train's class names,
     'class_dirs': {split: [class]} of folders present, 'skipped': [{path, reason, detail}] of files skipped without
     opening them, 'stats': [(path, size, mtime_ns)] of every file (the cache key: fixing any file re-decodes)}."""
    out = {"skipped": [], "stats": [], "class_dirs": {}, "subfolders": []}

    def class_dirs(split_dir: Path) -> list[Path]:
        # hidden folders (.ipynb_checkpoints) and macOS archive leftovers (__MACOSX) are not classes
        return sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX")))

    train_classes = [d.name for d in class_dirs(root / "train")]
    if not train_classes:
        raise DataError(f"{root}/train has no class folders; expected {root}/train/<class>/*.jpg|png")
    for split in ("train", "test"):
        items = []
        dirs = class_dirs(root / split)
        out["class_dirs"][split] = [d.name for d in dirs]
        for cls_dir in dirs:
            if cls_dir.name not in train_classes:
                raise DataError(f"{cls_dir} is a class that {root}/train does not have ({', '.join(train_classes)})")
            with os.scandir(cls_dir) as it:
                listed = list(it)
            entries = sorted((e for e in listed if e.is_file()), key=lambda e: e.name)
            out["subfolders"] += sorted(
                f"{split}/{cls_dir.name}/{e.name}/"
                for e in listed
                if e.is_dir() and not e.name.startswith((".", "__MACOSX"))
            )
            for e in entries:
                st = e.stat()
                rel = f"{split}/{cls_dir.name}/{e.name}"
                out["stats"].append((rel, st.st_size, st.st_mtime_ns))
                reason = images.listing_reason(e.name, st.st_size)
                if reason:
                    out["skipped"].append({"path": rel, "reason": reason, "detail": ""})
                else:
                    items.append((cls_dir.name, cls_dir / e.name))
        if not items:
            raise DataError(f"no images in {root}/{split}/<class>/ (looked for {', '.join(images.IMAGE_EXTENSIONS)})")
        out[split] = items
    if len(train_classes) == 1:  # after "no images": an empty folder is said to be empty first
        raise DataError(
            f"{root}/train has one class folder ({train_classes[0]}); a classifier needs at least 2: "
            f"add a folder per class, {root}/train/<class>/*.jpg|png"
        )
    out["classes"] = train_classes
    return out


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns


def _fingerprint(stats) -> str:
    """Hash of names, sizes and mtimes: a changed, added or removed file gives a new cache key."""
    h = hashlib.sha1()
    for path, size, mtime in stats:
        h.update(f"{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def _decode_folder(files: dict, size: int, quiet: bool = False) -> dict:
    """Decode every listed file into one preallocated array; files that fail are skipped and listed."""
    from tqdm import tqdm

    classes = files["classes"]
    index = {c: i for i, c in enumerate(classes)}
    items = files["train"] + files["test"]
    x = np.empty((len(items), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(items), dtype=bool)
    root = items[0][1].parents[2]

    def work(i: int):
        try:
            x[i] = images.decode(items[i][1], size)
            ok[i] = True
        except images.BadImage as e:
            return {"path": items[i][1].relative_to(root).as_posix(), "reason": e.reason, "detail": e.detail}
        return None

    # PIL releases the GIL while decoding, so threads use both cores without pickling images between processes.
    with images.bomb_warnings_as_errors(), ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        bar = tqdm(
            pool.map(work, range(len(items))),
            total=len(items),
            desc="decode",
            unit="img",
            file=sys.stderr,
            disable=quiet,
            mininterval=0.5,
            dynamic_ncols=False,
            ncols=100,
        )
        bad = [r for r in bar if r is not None]
    n_train = len(files["train"])

    def kept(a: np.ndarray, mask: np.ndarray) -> np.ndarray:  # no copy of a large array when nothing was skipped
        return a if mask.all() else a[mask]

    labels = np.asarray([index[c] for c, _ in items], dtype=np.int64)
    skipped = sorted(files["skipped"] + bad, key=lambda s: s["path"])
    return {
        "classes": np.asarray(classes),
        "x_train": kept(x[:n_train], ok[:n_train]),
        "y_train": kept(labels[:n_train], ok[:n_train]),
        "x_test": kept(x[n_train:], ok[n_train:]),
        "y_test": kept(labels[n_train:], ok[n_train:]),
        "skipped": np.asarray(json.dumps(skipped)),
        "num_files": np.asarray(len(files["stats"])),
    }


def _check_classes(root: Path, files: dict, classes: list[str], arrays: dict, skipped: list[dict]) -> None:
    """A class folder whose every file was skipped is an error naming it (a class with no images cannot be
    learnt, and an empty test class would go unreported)."""
    for split in ("train", "test"):
        counts = np.bincount(arrays[f"y_{split}"], minlength=len(classes))
        for name in files["class_dirs"][split]:
            if counts[classes.index(name)] == 0:
                bad = [s for s in skipped if s["path"].startswith(f"{split}/{name}/")]
                subs = [s for s in bad if s["reason"] == images.SUBFOLDER]
                bad = [s for s in bad if s not in subs]
                why = [f"all {len(bad)} files skipped: {_listing(bad, 3)}"] if bad else []
                if subs:
                    names = ", ".join(s["path"].removeprefix(f"{split}/{name}/") for s in subs[:3])
                    why.append(
                        f"subfolders are not read: {names}{', ...' if len(subs) > 3 else ''}; put the "
                        "images directly in the class folder"
                    )
                reason = f" ({'; '.join(why)})" if why else ""
                raise DataError(f"class folder {root}/{split}/{name} has no usable images{reason}")


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _stratified_take(idx: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n >= len(idx):
        return idx
    _, keep = stratified_split(labels, n / len(idx), seed) if np.bincount(labels).min() >= 2 else (None, None)
    if keep is None:  # too few per class to stratify: a plain random subset
        return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    return idx[keep]


def _atomic_savez(path: Path, arrays: dict) -> None:
    """Write to a temporary file then rename, so a killed run never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
