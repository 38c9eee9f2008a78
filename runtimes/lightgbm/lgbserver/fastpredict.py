"""Prediction from a dense numpy matrix straight through LightGBM's C API.

`Booster.predict` spends about half of a small request's time in Python (it builds a predictor
object, copies its parameters and checks the input's type on every call). This calls the same C
function, `LGBM_BoosterPredictForMat` (public, with this signature since LightGBM 3.0), on the
request's own buffer. It is checked against `Booster.predict` at load; if this LightGBM's
internals it relies on differ, the model falls back to `Booster.predict`."""

from __future__ import annotations

import ctypes
import logging

import numpy as np

log = logging.getLogger(__name__)

# C_API_DTYPE_FLOAT32 and C_API_DTYPE_FLOAT64: the dtypes LightGBM reads without a copy.
_DTYPES = {np.dtype("<f4"): 0, np.dtype("<f8"): 1}
_ROW_MAJOR = 1
_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL: what Booster.predict returns by default
_ALL_ITERATIONS = -1


class MatrixPredictor:
    def __init__(self, booster, lib, check_call, width: int):
        self.booster = booster  # keeps the handle alive
        self.call = lib.LGBM_BoosterPredictForMat
        self.check_call = check_call
        self.width = width  # values per row of the result
        self.parameters: dict[int, bytes] = {}

    @classmethod
    def create(cls, booster, width: int) -> MatrixPredictor | None:
        """A predictor for `booster`, or None (then use Booster.predict) if this LightGBM's
        internals differ or it disagrees with Booster.predict on a probe input."""
        try:
            from lightgbm.basic import _LIB, _safe_call

            # The values LightGBM writes per row, asked before it writes into a buffer sized so.
            per_row = ctypes.c_int64(0)
            _safe_call(_LIB.LGBM_BoosterCalcNumPredict(
                booster._handle, ctypes.c_int(1), ctypes.c_int(_PREDICT_NORMAL), ctypes.c_int(0),
                ctypes.c_int(_ALL_ITERATIONS), ctypes.byref(per_row)))
            if per_row.value != width:
                raise ValueError(f"LightGBM predicts {per_row.value} values per row, not {width}")
            predictor = cls(booster, _LIB, _safe_call, width)
            probe = np.random.default_rng(0).normal(size=(3, booster.num_feature()))
            probe[0, 0] = np.nan
            ours = predictor.predict(probe, 1)
            theirs = booster.predict(probe, num_threads=1)
            if ours.shape != theirs.shape or not np.array_equal(ours, theirs, equal_nan=True):
                raise ValueError("results differ from Booster.predict")
            return predictor
        except Exception as exc:  # any difference at all: the library's own path is the answer
            log.warning("direct prediction unavailable (%s); using Booster.predict", exc)
            return None

    def predict(self, data: np.ndarray, threads: int) -> np.ndarray:
        dtype = _DTYPES.get(data.dtype)
        if dtype is None or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data, dtype=np.float64)
            dtype = 1
        rows = data.shape[0]
        out = np.empty(rows * self.width, dtype=np.float64)
        length = ctypes.c_int64(0)
        parameters = self.parameters.get(threads)
        if parameters is None:
            parameters = self.parameters[threads] = f"num_threads={threads}".encode()
        # ctypes releases the GIL for the call.
        self.check_call(self.call(
            self.booster._handle, ctypes.c_void_p(data.ctypes.data), ctypes.c_int(dtype),
            ctypes.c_int32(rows), ctypes.c_int32(data.shape[1]), ctypes.c_int(_ROW_MAJOR),
            ctypes.c_int(_PREDICT_NORMAL), ctypes.c_int(0), ctypes.c_int(_ALL_ITERATIONS),
            ctypes.c_char_p(parameters), ctypes.byref(length),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        if length.value != out.size:
            raise RuntimeError(f"LightGBM wrote {length.value} values for {rows} rows of "
                               f"{self.width}")
        return out.reshape(rows, self.width) if self.width > 1 else out
