"""A scikit-learn model in a folder, found the way KServe's sklearnserver finds it."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InferRequest, InvalidInput, Model, TensorSpec
from modelserver.args import str2bool
from modelserver.datatypes import from_numpy
from modelserver.runtime.files import find_model_file

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle", ".skops")
OUTPUTS = ("predict", "predict_proba")


class SKLearnModel(Model):
    platform = "scikit-learn"
    defaults = {"max_batch_size": 128}  # predict is row-wise: concurrent requests share one call

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.estimator: Any = None
        self.features: list[str] | None = None
        self.n_features: int | None = None

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        folder = Path(folder)
        if (folder / "MLmodel").is_file():  # an MLflow model, whatever flavour it holds
            return False
        return any(p.suffix in MODEL_EXTENSIONS and p.is_file() for p in folder.iterdir())

    def load(self) -> bool:
        path = find_model_file(self.model_dir, MODEL_EXTENSIONS, "scikit-learn")
        if self.fetched_from is not None and path.suffix != ".skops":
            log.warning("%s came from %s through the repository API and is a pickle: loading "
                        "it runs whatever code it holds; use .skops for models you do not "
                        "fully trust", path.name, self.fetched_from)
        self.estimator = load_estimator(path)
        names = getattr(self.estimator, "feature_names_in_", None)
        self.features = None if names is None else [str(n) for n in names]
        self.n_features = getattr(self.estimator, "n_features_in_", None)
        # KServe's switch: v1 answers with probabilities instead of labels.
        proba = str2bool(os.environ.get("PREDICT_PROBA", "false"))
        self.settings = self.settings.default(outputs=("predict_proba" if proba else "predict",))
        if "predict_proba" in self.settings.outputs and not self._has_proba():
            raise ValueError("PREDICT_PROBA is set but the model has no predict_proba")
        return True

    def _has_proba(self) -> bool:
        return hasattr(self.estimator, "predict_proba")

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        if self.features is not None:
            return [TensorSpec(name, "FP64", [-1]) for name in self.features]
        return [TensorSpec("input-0", "FP64", [-1, self.n_features or -1])]

    def outputs(self) -> list[TensorSpec]:
        classes = getattr(self.estimator, "classes_", None)
        if classes is None:
            specs = [TensorSpec("predict", "FP64", [-1])]
        else:
            specs = [TensorSpec("predict", from_numpy(np.asarray(classes).dtype), [-1])]
        if self._has_proba():
            width = -1 if classes is None else len(classes)
            specs.append(TensorSpec("predict_proba", "FP64", [-1, width]))
        return specs

    # -- inference ------------------------------------------------------------------------------
    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        features = self._features_of(request)
        wanted = request.output_names or ["predict"]
        results = {}
        for name in wanted:
            if name not in OUTPUTS or (name == "predict_proba" and not self._has_proba()):
                available = [o.name for o in self.outputs()]
                raise InvalidInput(
                    f"model '{self.name}' has no output '{name}'; it has {', '.join(available)}"
                )
            try:
                results[name] = getattr(self.estimator, name)(features)
            except (ValueError, TypeError) as exc:  # sklearn's word for input it cannot use
                raise InvalidInput(f"model '{self.name}' cannot use this input: {exc}") from None
        return results

    def _features_of(self, request: InferRequest) -> Any:
        if self.features is not None:
            return self._frame(request)
        if len(request.inputs) != 1:
            raise InvalidInput(f"model '{self.name}' takes one input, got {len(request.inputs)}")
        rows = _as_text(request.inputs[0].data)
        self._check_width(rows)
        return rows

    def _check_width(self, rows: np.ndarray) -> None:
        if rows.ndim != 2:
            raise InvalidInput(
                f"model '{self.name}' expects a 2-D [rows, features] input, got shape "
                f"{list(rows.shape)}"
            )
        if self.n_features is not None and rows.shape[1] != self.n_features:
            raise InvalidInput(
                f"model '{self.name}' expects {self.n_features} features per row, "
                f"got {rows.shape[1]}"
            )

    def _frame(self, request: InferRequest):
        """Models fit on a DataFrame get one, with columns named as they were at fit time."""
        import pandas as pd

        columns = request.as_numpy()
        if all(name in columns for name in self.features):
            try:
                return pd.DataFrame({n: _as_text(columns[n]).reshape(-1) for n in self.features})
            except ValueError as exc:
                raise InvalidInput(f"feature columns do not line up: {exc}") from None
        if len(columns) == 1:
            rows = _as_text(next(iter(columns.values())))
            self._check_width(rows)
            return pd.DataFrame(rows, columns=self.features)
        missing = [n for n in self.features if n not in columns]
        raise InvalidInput(
            f"model '{self.name}' expects features {', '.join(self.features)}: send one input "
            f"per feature or one [rows, {len(self.features)}] input; missing {', '.join(missing)}"
        )


def _as_text(array: np.ndarray) -> np.ndarray:
    """BYTES tensors arrive as bytes; scikit-learn's encoders were fit on str."""
    if array.dtype == object and array.size and isinstance(array.flat[0], bytes):
        return np.array([b.decode("utf-8", "replace") for b in array.reshape(-1)],
                        dtype=object).reshape(array.shape)
    return array


def load_estimator(path: Path) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = _load_skops(path) if path.suffix == ".skops" else _load_pickle(path)
    for warning in caught:
        if "version" in str(warning.message).lower():
            log.warning("%s: %s", path.name, warning.message)
    log.info("loaded %s (%s)", path, type(estimator).__name__)
    return estimator


def _load_pickle(path: Path) -> Any:
    import joblib

    return joblib.load(path)


def _load_skops(path: Path) -> Any:
    """skops refuses types it does not know to be safe unless SKOPS_TRUSTED_TYPES lists them."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    allowed = {t.strip() for t in os.environ.get("SKOPS_TRUSTED_TYPES", "").split(",") if t.strip()}
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise ValueError(
            f"{path.name} holds types skops does not trust: {', '.join(refused)}; "
            "list them in SKOPS_TRUSTED_TYPES (comma-separated) if you trust this file"
        )
    return sio.load(path, trusted=untrusted)
