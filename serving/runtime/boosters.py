"""Calling LightGBM boosters on the hot path: one thread for small calls, the single-row C API for one row.

A request for one customer takes microseconds of tree walking; spreading it over every core through
OpenMP costs more than it saves, and with several service workers on one machine the workers' thread
teams fight over the same cores (the service then ran slower than a single-threaded one). So calls of
up to `SMALL_BATCH_ROWS` rows run on the calling thread only, and only large batches (batch scoring,
big requests handled in a worker thread) use LightGBM's default of every core. The setting is passed
per call: nothing depends on the user exporting OMP_NUM_THREADS, and threads of one process can use
different settings at once (OpenMP keeps the thread count per calling thread).

For a handful of rows, `Booster.predict` spends most of its time setting up a predictor per call
(parameter parsing, shape checks); LightGBM's "fast single-row" C API does that set-up once. Each
calling thread gets its own fast handle (LightGBM's buffers behind one handle are not meant to be
shared between threads). Answers are the same numbers as `Booster.predict`.

Compiled trees (`use_compiled`, the `fast` extra; see `serving.runtime.compiled`): when switched on, large
batches (the calls that would use every core) go through the booster compiled by lleaves instead, on as
many threads; small calls and contributions keep the paths above. Off unless asked for: the online service
never compiles anything.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

SMALL_BATCH_ROWS = 4096  # at or below: one thread per call
ALL_CORES = 0  # LightGBM's "use OpenMP's default", i.e. every core
FAST_ROWS = 8  # at or below: row by row through the single-row API

_PREDICT_NORMAL, _PREDICT_CONTRIB = 0, 3
_FLOAT64 = 1


_batch_thread_limit = 0  # 0: none (large calls use every core)


def limit_batch_threads(threads: int) -> None:
    """Cap the threads of large calls in this process; 0 lifts the cap. Spark executors set it to the task's
    cores: Spark already runs one task per core, and each task spreading over every core would put cores ×
    cores OpenMP threads on the machine."""
    global _batch_thread_limit
    _batch_thread_limit = max(0, int(threads))


def predict_threads(n_rows: int) -> int:
    """`num_threads` for a LightGBM predict over `n_rows` rows: 1 for small calls, else every core (or the
    `limit_batch_threads` cap)."""
    return 1 if n_rows <= SMALL_BATCH_ROWS else (_batch_thread_limit or ALL_CORES)


class _FastHandle:
    """One LightGBM FastConfig (booster, predict type, column count); freed with the object."""

    def __init__(self, booster: lgb.Booster, predict_type: int, n_features: int):
        self.handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(predict_type), ctypes.c_int(0), ctypes.c_int(-1),
            ctypes.c_int(_FLOAT64), ctypes.c_int32(n_features), ctypes.c_char_p(b"num_threads=1"),
            ctypes.byref(self.handle)))
        self._booster = booster  # the handle points into the booster: keep it alive
        self._free = weakref.finalize(self, _LIB.LGBM_FastConfigFree, self.handle)
        self.out_len = ctypes.c_int64(0)


class BoosterCaller:
    """Predictions of one booster, choosing per call how to run them (see the module docstring).

    Picklable: the per-thread fast handles and the compiled model are left behind and rebuilt on first use
    after unpickling (the compiled one from the disk cache)."""

    _TRANSIENT = ("_local", "_compiled")

    def __init__(self, booster: lgb.Booster):
        self.booster = booster
        self.n_features = booster.num_feature()
        self.n_outputs = {_PREDICT_NORMAL: 1, _PREDICT_CONTRIB: self.n_features + 1}
        self.compiled_trees = False
        self._compiled = None
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("compiled_trees", False)  # pickled before compiled trees existed
        self._compiled = None
        self._local = threading.local()

    def use_compiled(self, on: bool = True) -> "BoosterCaller":
        """Send large batches through the lleaves-compiled booster (compiled now, or loaded from the cache)."""
        self.compiled_trees = on
        if on:
            self._compiled_model()
        return self

    def _compiled_model(self):
        if self._compiled is None:
            from serving.runtime import compiled

            self._compiled = compiled.compile_model(self.booster.model_to_string())
        return self._compiled

    def _fast(self, predict_type: int) -> _FastHandle:
        handles = self._local.__dict__.setdefault("handles", {})
        fast = handles.get(predict_type)
        if fast is None:
            fast = handles[predict_type] = _FastHandle(self.booster, predict_type, self.n_features)
        return fast

    def _rows(self, X: np.ndarray, predict_type: int) -> np.ndarray:
        fast = self._fast(predict_type)
        width = self.n_outputs[predict_type]
        out = np.empty((len(X), width), dtype=np.float64)
        X = np.ascontiguousarray(X, dtype=np.float64)
        row_bytes, out_bytes = X.strides[0], width * out.itemsize
        x_at, out_at = X.ctypes.data, out.ctypes.data  # plain addresses: cheaper than a ctypes array per row
        out_len = ctypes.byref(fast.out_len)
        for i in range(len(X)):
            _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFast(
                fast.handle, ctypes.c_void_p(x_at + i * row_bytes), out_len,
                ctypes.c_void_p(out_at + i * out_bytes)))
        return out

    def _predict(self, X: np.ndarray, predict_type: int) -> np.ndarray:
        """(n, n_outputs): row by row for a few rows, else `Booster.predict` with the size's thread count."""
        if 0 < len(X) <= FAST_ROWS and X.shape[1] == self.n_features:
            return self._rows(X, predict_type)
        if (self.compiled_trees and predict_type == _PREDICT_NORMAL and len(X) > SMALL_BATCH_ROWS
                and X.ndim == 2 and X.shape[1] == self.n_features):
            from serving.runtime.compiled import batch_threads

            X = np.ascontiguousarray(X, dtype=np.float64)
            threads = _batch_thread_limit or batch_threads()
            return self._compiled_model().predict(X, n_jobs=threads).reshape(len(X), 1)
        out = self.booster.predict(X, num_threads=predict_threads(len(X)),
                                   **({"pred_contrib": True} if predict_type == _PREDICT_CONTRIB else {}))
        return out.reshape(len(X), self.n_outputs[predict_type])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Transformed prediction (a probability for binary models), shape (n,)."""
        return self._predict(X, _PREDICT_NORMAL)[:, 0]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions to the raw score, shape (n, n_features + 1), bias last."""
        return self._predict(X, _PREDICT_CONTRIB)
