"""Lazy TensorFlow import and per-process TensorFlow configuration.

Nothing here imports TensorFlow at module import time: ``import hpsearch.estimators``
stays cheap and works without TensorFlow installed. :func:`import_tensorflow` is
what every estimator calls inside ``fit``/``predict``; :func:`configure_tensorflow`
is what a worker process calls once, before any model is built, to pin itself to
one GPU and size TensorFlow's thread pools.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType
from typing import Any

from ..errors import HPSearchError, MissingDependencyError

logger = logging.getLogger(__name__)

__all__ = ["TensorFlowConfigError", "configure_tensorflow", "import_tensorflow"]

INSTALL_HINT = "pip install hpsearch[tensorflow]"


class TensorFlowConfigError(HPSearchError, RuntimeError):
    """A TensorFlow setting that can no longer be applied in this process.

    ``CUDA_VISIBLE_DEVICES``, GPU memory growth and thread pool sizes only take
    effect before TensorFlow has initialised its runtime.
    """


def _tensorflow_loaded() -> bool:
    # sys.modules["tensorflow"] is None when an import of it failed or was blocked
    return sys.modules.get("tensorflow") is not None


def import_tensorflow() -> tuple[ModuleType, ModuleType]:
    """Import and return ``(tensorflow, keras)``, with a clear error when missing.

    TensorFlow's C++ log level defaults to ``"2"`` (warnings and errors hidden
    from the C++ runtime's INFO chatter) unless the user set
    ``TF_CPP_MIN_LOG_LEVEL`` already.

    Returns
    -------
    tensorflow, keras : module
        Keras is Keras 3 (``import keras``), the one TensorFlow >= 2.16 ships.

    Raises
    ------
    MissingDependencyError
        TensorFlow (or Keras) is not installed; the message names the extra.

    Examples
    --------
    >>> from hpsearch.estimators import import_tensorflow
    >>> tf, keras = import_tensorflow()  # doctest: +SKIP
    """
    if not _tensorflow_loaded():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        tf = importlib.import_module("tensorflow")
        keras = importlib.import_module("keras")
    except ImportError as exc:
        raise MissingDependencyError(
            f"hpsearch's TensorFlow estimators need TensorFlow and Keras 3, which are "
            f"not installed ({exc}). Install them with: {INSTALL_HINT}"
        ) from exc
    return tf, keras


def configure_tensorflow(
    gpu: str | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
) -> dict[str, Any]:
    """Pin this process to GPUs and size TensorFlow's thread pools.

    Call it once per process, before anything imports TensorFlow (a worker calls it
    at start-up: ``hpsearch-worker --gpu 0``).

    Parameters
    ----------
    gpu : str or None
        Value for ``CUDA_VISIBLE_DEVICES``: ``"0"``, ``"0,1"``, or ``""`` to hide
        every GPU. None leaves the variable as it is. Memory growth is turned on for
        every GPU TensorFlow then sees, so several processes can share one GPU and
        no process grabs all its memory up front.
    intra_op_threads : int or None
        Threads one TensorFlow op may use (e.g. the worker's slots or its share of
        the cores). None keeps TensorFlow's default (all cores).
    inter_op_threads : int or None
        Ops TensorFlow runs at once. None keeps the default.

    Returns
    -------
    dict
        What was applied: ``cuda_visible_devices``, ``gpus`` (names of the visible
        GPUs), ``intra_op_threads``, ``inter_op_threads``.

    Raises
    ------
    TensorFlowConfigError
        ``gpu`` is given but TensorFlow is already imported (the CUDA runtime has read
        ``CUDA_VISIBLE_DEVICES`` already), or TensorFlow's runtime is already
        initialised so the thread pools cannot change any more.
    MissingDependencyError
        TensorFlow is not installed.
    ValueError
        A thread count that is not a positive integer.

    Examples
    --------
    >>> from hpsearch.estimators import configure_tensorflow
    >>> configure_tensorflow(gpu="0", intra_op_threads=4, inter_op_threads=2)  # doctest: +SKIP
    {'cuda_visible_devices': '0', 'gpus': ['/physical_device:GPU:0'], ...}
    """
    for name, value in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if gpu is not None:
        if _tensorflow_loaded():
            raise TensorFlowConfigError(
                f"cannot pin this process to GPU {gpu!r}: TensorFlow is already imported, and "
                "CUDA_VISIBLE_DEVICES is only read when it loads. Call configure_tensorflow "
                "before anything imports tensorflow (or set CUDA_VISIBLE_DEVICES in the "
                "environment of the process)."
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    tf, _ = import_tensorflow()

    gpus = tf.config.list_physical_devices("GPU")
    for device in gpus:
        try:
            tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError as exc:  # the GPUs are initialised already
            raise TensorFlowConfigError(
                f"cannot turn on memory growth for {device.name}: {exc}. "
                "Call configure_tensorflow before building any model."
            ) from exc
    try:
        if intra_op_threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError as exc:  # the runtime's pools exist already
        raise TensorFlowConfigError(
            f"cannot size TensorFlow's thread pools (intra_op_threads={intra_op_threads!r}, "
            f"inter_op_threads={inter_op_threads!r}): {exc}. Call configure_tensorflow "
            "before running any TensorFlow op."
        ) from exc
    applied = {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": [device.name for device in gpus],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    logger.info("TensorFlow configured: %s", applied)
    return applied
