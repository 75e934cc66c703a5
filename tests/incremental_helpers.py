"""Estimators for the incremental-training tests.

Worker processes import this module by name (pickles refer to its classes), so it
holds no test code and has no side effects on import.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import SGDClassifier


def _append(path: str | None, line: bytes) -> None:
    """One atomic append (O_APPEND, one small write): counts from any process."""
    if path is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def count_lines(path: str, line: bytes) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        return sum(1 for row in f if row == line)


class CountingSGD(ClassifierMixin, BaseEstimator):
    """An ``SGDClassifier`` trained by ``partial_fit``, each call and each ``fit``
    written to ``count_file`` (``b"p\\n"`` / ``b"f\\n"``).

    With ``kill_after``, the first call made in a process other than ``master_pid``
    once ``count_file`` holds that many calls kills its own process (once per
    ``kill_flag`` file): a worker lost mid-search.
    """

    def __init__(self, alpha: float = 1e-4, max_iter: int = 5, count_file: str | None = None,
                 kill_after: int | None = None, kill_flag: str | None = None, master_pid: int = 0) -> None:
        self.alpha = alpha
        self.max_iter = max_iter
        self.count_file = count_file
        self.kill_after = kill_after
        self.kill_flag = kill_flag
        self.master_pid = master_pid

    def _maybe_die(self) -> None:
        if self.kill_after is None or self.kill_flag is None or os.getpid() == self.master_pid:
            return
        if self.count_file is None or count_lines(self.count_file, b"p\n") < self.kill_after:
            return
        try:
            os.close(os.open(self.kill_flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> CountingSGD:
        self._maybe_die()
        _append(self.count_file, b"p\n")
        if not hasattr(self, "sgd_"):
            self.sgd_ = SGDClassifier(alpha=self.alpha, random_state=0)
        self.sgd_.partial_fit(X, y, classes=classes)
        self.classes_ = self.sgd_.classes_
        return self

    def fit(self, X: Any, y: Any) -> CountingSGD:
        _append(self.count_file, b"f\n")
        self.sgd_ = SGDClassifier(alpha=self.alpha, random_state=0)
        for _ in range(self.max_iter):
            self.sgd_.partial_fit(X, y, classes=np.unique(y))
        self.classes_ = self.sgd_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.sgd_.predict(X)
