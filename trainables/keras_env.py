"""The one place TensorFlow and Keras are imported: on the TensorFlow backend, without start-up noise.

Import `keras` / `tf` from here (`from trainables.keras_env import keras, tf`), never directly, so the environment is
set before either is loaded. Only the Keras code paths import this module: a torch search never pays for TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
from contextlib import contextmanager

# Keras 3 picks its backend once, at import; our layers, saving and training code are TensorFlow's.
os.environ["KERAS_BACKEND"] = "tensorflow"
# Hide TF's C++ INFO/WARNING lines (device creation, CUDA probing) once absl logging is initialised.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Lines TF 2.21 writes straight to fd 2 while it is imported, before absl logging exists (so TF_CPP_MIN_LOG_LEVEL
# cannot hide them): the oneDNN notice, twice, CPU-feature and CUDA-plugin probing. Anything else is replayed.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"Could not find cuda drivers|TF-TRT Warning|cuda_(dnn|fft|blas)\.cc|external/local_xla"
)


@contextmanager
def _quiet_stderr():
    """Capture fd 2 (C++ writes bypass sys.stderr) during the import; replay every line that is not known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [ln for ln in captured.read().decode(errors="replace").splitlines() if not _NOISE.search(ln)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


# TF >= 2.20 wheels load their bundled LLVM with RTLD_GLOBAL; triton (torch's compiler: torch._dynamo and
# torchvision.ops import it) has its own LLVM and segfaults if it is loaded after TF (tensorflow/tensorflow#124205).
# Loaded first, both work, so a process may use Keras and torch (report.py, the test suite) in any order.
if importlib.util.find_spec("triton") is not None:
    import triton._C.libtriton  # noqa: F401

with _quiet_stderr():
    import keras
    import tensorflow as tf

if keras.backend.backend() != "tensorflow":  # keras was imported earlier in this process with another backend
    raise ImportError(
        f"the Keras models need KERAS_BACKEND=tensorflow, but Keras was already loaded with {keras.backend.backend()!r}"
    )
tf.get_logger().setLevel("ERROR")  # Python-side TF warnings (retracing, deprecations) would flood trial output

__all__ = ["keras", "tf"]
