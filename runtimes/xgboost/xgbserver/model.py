"""An XGBoost booster in a folder, found the way KServe's xgbserver finds it.

Predictions go through XGBoost's in-place prediction on the request's own numpy buffer: no
DMatrix is built per request (KServe's xgbserver builds one, which costs more than the prediction
of a small model)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InferRequest, InvalidInput, Model, TensorSpec
from modelserver.args import str2bool
from modelserver.runtime.files import find_model_file, model_files
from modelserver.runtime.tabular import Features, number_matrix, require_numbers
from modelserver.runtime.versions import SavedWith

from .fastpredict import DensePredictor

log = logging.getLogger(__name__)

# KServe's xgbserver takes the one file with one of these endings (BOOSTER_FILE_EXTENSION).
MODEL_EXTENSIONS = (".json", ".ubj", ".bst")
# Files with those endings that are never the model.
NOT_MODELS = {"settings.json"}  # a model repository's per-model settings

CLASSIFIER_OBJECTIVES = {"binary:logistic", "binary:hinge", "multi:softmax", "multi:softprob"}
PROBA_OBJECTIVES = {"binary:logistic", "multi:softmax", "multi:softprob"}
# XGBoost's feature types as v2 datatypes; XGBoost computes in float32 whatever it is given.
# Where XGBoost records its version: `"version":[3,2,0]` in JSON, an int8 array in UBJSON.
_JSON_VERSION = re.compile(rb'"version"\s*:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]')
_UBJ_VERSION = re.compile(rb"version\[#L.{8}i(.)i(.)i(.)", re.DOTALL)
FEATURE_DATATYPES = {"c": "BYTES", "int": "INT64", "i": "BOOL"}


class XGBoostModel(Model):
    platform = "xgboost"
    # Prediction is row-wise: concurrent requests are merged into one call of up to this many
    # rows. XGBoost predicts in blocks of 64 rows per thread; 256 rows is still one cheap call.
    defaults = {"max_batch_size": 256}
    # KServe's xgbserver flag: XGBoost's threads per worker (0 or unset: the worker's share of
    # the CPUs); settings.json can set it per model as parameters.nthread.
    flags = {"nthread": {"type": int, "help": "XGBoost's threads per worker (default: the "
                                              "worker's share of the CPUs)"}}
    # The prediction itself runs in C++ without the GIL, so the event loop keeps parsing the
    # next requests meanwhile.
    predict_in_thread = True

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.booster: Any = None
        self.path: Path | None = None
        self.objective = ""
        self.num_feature = 0
        self.num_class = 0
        self.num_target = 1
        self.nthread = 0
        self.features = Features(name)
        self.categorical: list[bool] = []
        self.has_categories = False
        self.fast: DensePredictor | None = None
        self.output_specs: dict[str, TensorSpec] = {}

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        folder = Path(folder)
        if not folder.is_dir() or (folder / "MLmodel").is_file():  # an MLflow model's own files
            return False
        candidates = model_files(folder, MODEL_EXTENSIONS, NOT_MODELS)
        return any(looks_like_booster(p) for p in candidates)

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> bool:
        self.path = find_booster(self.model_dir)
        self.booster = load_booster(self.path)
        self.nthread = self.settings.parameter("nthread") or self.settings.threads
        self.booster.set_param({"nthread": self.nthread})
        config = json.loads(self.booster.save_config())["learner"]
        self.objective = config["objective"]["name"]
        params = config["learner_model_param"]
        self.num_feature = int(params.get("num_feature", 0)) or self.booster.num_features()
        self.num_class = int(params.get("num_class", 0))
        self.num_target = max(1, int(params.get("num_target", 1)))
        names = self.booster.feature_names
        types = self.booster.feature_types or []
        self.categorical = [t == "c" for t in types]
        self.has_categories = any(self.categorical)
        self.features = Features.of(self.name, names, self.num_feature,
                                    [FEATURE_DATATYPES.get(t, "FP32") for t in types], "FP32",
                                    self.settings.inputs)
        if any(self.categorical):
            if names is None:
                raise ValueError(f"{self.path.name} has categorical features but no feature names")
            try:
                import pandas  # noqa: F401
            except ImportError:
                raise ValueError(f"{self.path.name} has categorical features, which need pandas: "
                                 "pip install 'xgbserver[categorical]'") from None
        else:
            self.fast = DensePredictor.create(self.booster, self.num_feature)
        # KServe's xgbserver answers v1 with the booster's predictions; PREDICT_PROBA=true (as in
        # the scikit-learn runtime) answers with the class probabilities instead.
        proba = str2bool(os.environ.get("PREDICT_PROBA", "false"))
        self.settings = self.settings.default(outputs=("predict_proba" if proba else "predict",))
        if "predict_proba" in self.settings.outputs and not self.has_proba:
            raise ValueError(f"PREDICT_PROBA is set but objective {self.objective} has no "
                             "class probabilities")
        self.output_specs = {spec.name: spec for spec in self.outputs()}
        self._warn_best_iteration()
        log.info("loaded %s: %s, %d features, %s, nthread=%d%s", self.path, self.objective,
                 self.num_feature, f"{self.num_class} classes" if self.num_class else
                 f"{self.num_target} target(s)", self.nthread,
                 "" if self.fast or any(self.categorical) else " (xgboost's inplace_predict)")
        return True

    def _warn_best_iteration(self) -> None:
        best = self.booster.attr("best_iteration")
        rounds = self.booster.num_boosted_rounds()
        if best is not None and int(best) + 1 < rounds:
            log.warning("%s was early-stopped at round %s of %d; like KServe's xgbserver (and "
                        "Booster.predict) this server predicts with all %d rounds",
                        self.path.name, best, rounds, rounds)

    @property
    def is_classifier(self) -> bool:
        return self.objective in CLASSIFIER_OBJECTIVES

    @property
    def has_proba(self) -> bool:
        return self.objective in PROBA_OBJECTIVES

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return self.features.specs()

    def outputs(self) -> list[TensorSpec]:
        if self.objective == "multi:softprob":
            predict = [-1, self.num_class]
        elif self.num_target > 1:
            predict = [-1, self.num_target]
        else:
            predict = [-1]
        specs = [TensorSpec("predict", "FP32", predict)]
        if self.has_proba:
            classes = self.num_target if self.num_target > 1 else max(self.num_class, 2)
            specs.append(TensorSpec("predict_proba", "FP32", [-1, classes]))
        if self.is_classifier:
            specs.append(TensorSpec("label", "INT64", [-1] if self.num_target == 1
                                    else [-1, self.num_target]))
        return specs

    # -- inference ------------------------------------------------------------------------------
    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        wanted = request.output_names or ["predict"]
        specs = self.output_specs
        for name in wanted:
            if name not in specs:
                raise InvalidInput(f"model '{self.name}' has no output '{name}'; it has "
                                   f"{', '.join(specs)}")
        data = self.features_of(request)
        if len(data) == 0:  # XGBoost answers no rows with a shapeless array
            return {name: np.empty([0, *specs[name].shape[1:]],
                                   np.int64 if name == "label" else np.float32)
                    for name in wanted}
        results: dict[str, np.ndarray] = {}
        values = None
        for name in wanted:
            if name == "predict_proba" and self.objective == "multi:softmax":
                results[name] = _softmax(self._predict(data, margin=True))
                continue
            if values is None:
                values = self._predict(data)
            if name == "predict":
                results[name] = values
            elif name == "predict_proba":
                results[name] = self._proba(values)
            else:
                results[name] = self._label(values)
        return results

    def _predict(self, data: Any, margin: bool = False) -> np.ndarray:
        if self.fast is not None and isinstance(data, np.ndarray):
            return self.fast.predict(data, margin)
        # validate_features=False: the columns are already in the booster's order.
        return self.booster.inplace_predict(data, predict_type="margin" if margin else "value",
                                            validate_features=False)

    def _proba(self, values: np.ndarray) -> np.ndarray:
        """As XGBClassifier.predict_proba: a [rows, classes] matrix, also for binary models."""
        if self.objective == "binary:logistic" and self.num_target == 1:
            return np.stack([1.0 - values, values], axis=1)
        return values

    def _label(self, values: np.ndarray) -> np.ndarray:
        """As XGBClassifier.predict: the class index."""
        if self.objective == "multi:softprob":
            return np.argmax(values, axis=1).astype(np.int64)
        if self.objective == "binary:logistic":
            return (values > 0.5).astype(np.int64)
        return values.astype(np.int64)  # multi:softmax, binary:hinge: already class indices

    # -- request to features --------------------------------------------------------------------
    def features_of(self, request: InferRequest) -> Any:
        data = self.features.read(request)
        if type(data) is np.ndarray and not self.has_categories:
            return self._matrix(data)
        if self.has_categories:
            if isinstance(data, np.ndarray):
                raise InvalidInput(
                    f"model '{self.name}' has categorical features: send one input per feature "
                    f"({', '.join(self.features.names)}), or v1 instances as JSON objects")
            return self.features.category_frame(data, self.categorical, np.float32)
        return number_matrix(data, np.float32)

    @staticmethod
    def _matrix(array: np.ndarray) -> np.ndarray:
        kind = array.dtype.kind
        if kind not in "fiu":
            require_numbers("the input", array)  # raises for text
            array = array.astype(np.float32)  # BOOL
        elif array.dtype.char == "e":  # float16
            array = array.astype(np.float32)
        if not array.flags.aligned:
            # A binary tensor at an odd offset of the request body: XGBoost refuses misaligned
            # input, so it gets an aligned copy (about 1 µs for an iris row).
            return array.copy()
        return np.ascontiguousarray(array)


def _softmax(margin: np.ndarray) -> np.ndarray:
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# -- finding and loading ------------------------------------------------------------------------
def find_booster(model_dir: str | os.PathLike) -> Path:
    # Other JSON files may sit beside the model: the booster is the one.
    return find_model_file(model_dir, MODEL_EXTENSIONS, "XGBoost", skip=NOT_MODELS,
                           narrow=lambda found: [p for p in found if looks_like_booster(p)]
                           or found)


def looks_like_booster(path: Path) -> bool:
    """Whether a file is an XGBoost model by its first bytes: JSON and UBJSON models both open
    with the `learner` object; `.bst` is XGBoost's own ending whatever the format inside, but
    for LightGBM's text models, which KServe's lgbserver also names `.bst`."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if path.suffix == ".bst":
        return not head.startswith(b"tree\n")
    return head.startswith(b"{") and b"learner" in head


def load_booster(path: Path):
    import xgboost as xgb

    try:
        booster = xgb.Booster(model_file=str(path))
    except xgb.core.XGBoostError as exc:
        raise ValueError(_load_error(path, exc, xgb.__version__)) from None
    SavedWith("XGBoost", __name__, saved_version(path), xgb.__version__).log_difference(path.name)
    return booster


def _load_error(path: Path, exc: Exception, version: str) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return f"cannot load {path}: the file is empty"
    if head.startswith(b"binf") or (path.suffix == ".bst" and not head.startswith(b"{")):
        # Neither JSON nor UBJSON: XGBoost's old binary format.
        return (
            f"{path} is in XGBoost's legacy binary format, which XGBoost 3.1 and later "
            f"cannot read (this server has xgboost {version}). Convert it with the XGBoost that "
            f"saved it (any version from 1.0 to 3.0): "
            f"python -c \"import xgboost; xgboost.Booster(model_file='{path.name}')"
            f".save_model('model.ubj')\" and serve model.ubj (or model.json) instead")
    advice = SavedWith("XGBoost", __name__, saved_version(path), version).advice()
    return f"cannot load {path}: {clean_message(str(exc))}{advice}"


def clean_message(message: str) -> str:
    """XGBoost's error text without its C++ stack trace and source locations."""
    message = message.split("Stack trace:")[0]
    message = re.sub(r"\[\d\d:\d\d:\d\d\] [^\s]+:\d+: ", "", message)
    return " ".join(message.split())


def saved_version(path: Path) -> str | None:
    """The version XGBoost writes at the end of a JSON or UBJSON model, if it is there."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 200))
            tail = f.read()
    except OSError:
        return None
    if match := _JSON_VERSION.search(tail):
        return ".".join(part.decode() for part in match.groups())
    if match := _UBJ_VERSION.search(tail):  # three int8 values
        return ".".join(str(part[0]) for part in match.groups())
    return None
