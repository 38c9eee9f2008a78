"""In-place prediction from a dense numpy array, straight through XGBoost's C API.

`Booster.inplace_predict` spends most of a small model's call in Python: it inspects the input's
type, builds its array-interface and config JSON with `json.dumps`, and defines a class per call
to read the result. This calls the same C function, `XGBoosterPredictFromDense` (public, stable
since XGBoost 1.4), with the config made once. It is checked against `inplace_predict` at load;
if XGBoost's Python internals it relies on ever change, the model falls back to
`inplace_predict`."""

from __future__ import annotations

import ctypes
import json
import logging
import math

import numpy as np

log = logging.getLogger(__name__)

# The dtypes XGBoost's array interface reads without a copy.
_DTYPES = {np.dtype(t) for t in ("<f4", "<f8", "<i1", "<i2", "<i4", "<i8",
                                 "<u1", "<u2", "<u4", "<u8")}


# numpy's __array_interface__ as JSON, read-only, C order.
_INTERFACE = b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"%s","version":3}'


def _config(predict_type: int) -> bytes:
    return json.dumps({
        "type": predict_type,  # 0: transformed value (Booster.predict), 1: margin
        "training": False,
        "iteration_begin": 0,
        "iteration_end": 0,  # all trees, as Booster.predict
        "strict_shape": False,
        "missing": math.nan,  # XGBoost reads NaN here
        "cache_id": 0,
    }).encode()


class DensePredictor:
    def __init__(self, booster, lib, check_call, bst_ulong):
        self.booster = booster  # keeps the handle alive
        self.handle = booster.handle
        self.call = lib.XGBoosterPredictFromDense
        self.check_call = check_call
        self.bst_ulong = bst_ulong
        self.configs = {False: _config(0), True: _config(1)}

    @classmethod
    def create(cls, booster, num_feature: int) -> DensePredictor | None:
        """A predictor for `booster`, or None (then use inplace_predict) if this XGBoost's
        internals differ or it disagrees with inplace_predict on a probe input."""
        try:
            from xgboost.core import _LIB, _check_call, c_bst_ulong

            predictor = cls(booster, _LIB, _check_call, c_bst_ulong)
            rng = np.random.default_rng(0)
            probe = rng.normal(size=(3, max(1, num_feature))).astype(np.float32)
            probe[0, 0] = np.nan
            for margin in (False, True):
                ours = predictor.predict(probe, margin)
                theirs = booster.inplace_predict(
                    probe, predict_type="margin" if margin else "value", validate_features=False)
                if ours.shape != theirs.shape or not np.array_equal(ours, theirs, equal_nan=True):
                    raise ValueError("results differ from inplace_predict")
            return predictor
        except Exception as exc:  # any difference at all: the library's own path is the answer
            log.warning("direct prediction unavailable (%s); using inplace_predict", exc)
            return None

    def predict(self, data: np.ndarray, margin: bool = False) -> np.ndarray:
        if data.dtype not in _DTYPES or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data, dtype=np.float32)
        interface = _INTERFACE % (data.ctypes.data, data.shape[0], data.shape[1],
                                  data.dtype.str.encode())
        shape = ctypes.POINTER(self.bst_ulong)()
        dims = self.bst_ulong()
        values = ctypes.POINTER(ctypes.c_float)()
        # ctypes releases the GIL for the call. The result lives in a per-thread buffer of the
        # booster, valid until this thread's next prediction: copied out below.
        self.check_call(self.call(self.handle, interface, self.configs[margin], None,
                                  ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(values)))
        out_shape = tuple(shape[i] for i in range(dims.value))
        out = np.empty(out_shape, dtype=np.float32)
        if out.size:
            ctypes.memmove(out.ctypes.data, values, out.nbytes)
        return out
