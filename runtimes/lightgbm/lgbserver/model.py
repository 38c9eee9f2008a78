"""A LightGBM booster in a folder, found the way KServe's lgbserver finds it: the one file ending
`.bst` (LightGBM's text model, as `Booster.save_model` writes it), or LightGBM's own `.txt`.

Requests go through the tabular codec (`modelserver.runtime.tabular`): one [rows, features]
matrix, or one input per feature by name. Predictions are LightGBM's C prediction on the numpy
matrix (fastpredict.py; `Booster.predict` computes the same with more Python around it); models
with pandas categorical features get `Booster.predict` on a DataFrame, whose categories LightGBM
re-codes to the ones stored in the model."""

from __future__ import annotations

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

from .fastpredict import MatrixPredictor

log = logging.getLogger(__name__)

# KServe's lgbserver takes the one `.bst` file; `.txt` is LightGBM's own ending for the same
# text format. `.json` is looked at only to say that LightGBM cannot load its JSON dumps.
MODEL_EXTENSIONS = (".bst", ".txt", ".json")
NOT_MODELS = {"settings.json"}  # a model repository's per-model settings
TEXT_MODEL = b"tree\n"  # how LightGBM's text model format begins
CLASSIFIER_OBJECTIVES = {"binary", "multiclass", "multiclassova"}
# The names LightGBM gives the features of a model fit on a plain array.
_UNNAMED = re.compile(r"Column_\d+")
# LightGBM splits a call's rows among its threads; below this many rows per thread, starting
# and joining the threads costs more than they save (64 iris rows: 82 µs on one thread, over
# 600 µs on two of a busy 2-core machine).
ROWS_PER_THREAD = 256


class LightGBMModel(Model):
    platform = "lightgbm"
    # Prediction is row-wise: concurrent requests are merged into one call of up to this many
    # rows (LightGBM's per-call cost is mostly fixed, so merged rows come nearly free).
    defaults = {"max_batch_size": 256}
    # KServe's lgbserver flag: LightGBM's threads per worker (0 or unset: the worker's share
    # of the CPUs); settings.json can set it per model as parameters.nthread.
    flags = {"nthread": {"type": int, "help": "LightGBM's threads per worker (default: the "
                                              "worker's share of the CPUs)"}}
    # LightGBM predicts in C++ without the GIL: the event loop keeps parsing meanwhile.
    predict_in_thread = True

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.booster: Any = None
        self.path: Path | None = None
        self.objective = ""
        self.num_class = 1
        self.nthread = 0
        self.features = Features(name)
        self.categorical: list[bool] = []  # features LightGBM takes as pandas categories
        self.output_specs: dict[str, TensorSpec] = {}
        self.fast: MatrixPredictor | None = None

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        folder = Path(folder)
        if not folder.is_dir() or (folder / "MLmodel").is_file():  # an MLflow model's own files
            return False
        return any(looks_like_lightgbm(p) for p in model_files(folder, MODEL_EXTENSIONS,
                                                               NOT_MODELS))

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> bool:
        self.path = find_model_file(self.model_dir, MODEL_EXTENSIONS, "LightGBM",
                                    skip=NOT_MODELS, narrow=_lightgbm_files,
                                    expected="one LightGBM text model ending .bst or .txt")
        self.booster = load_booster(self.path)
        header = read_header(self.path)
        self.nthread = self.settings.parameter("nthread") or self.settings.threads
        self.objective = header.get("objective", "").split(" ")[0]
        self.num_class = int(header.get("num_class", 1))
        names = self.booster.feature_name()
        if all(_UNNAMED.fullmatch(n) for n in names):
            names = None
        datatypes, self.categorical = self._feature_types(header)
        self.features = Features.of(self.name, names, self.booster.num_feature(), datatypes,
                                    "FP64", self.settings.inputs)
        if any(self.categorical):
            try:
                import pandas  # noqa: F401
            except ImportError:
                raise ValueError(f"{self.path.name} has categorical features, which need "
                                 "pandas: pip install 'lgbserver[categorical]'") from None
        # As the other runtimes: v1 answers predict, or predict_proba with PREDICT_PROBA=true.
        proba = str2bool(os.environ.get("PREDICT_PROBA", "false"))
        self.settings = self.settings.default(outputs=("predict_proba" if proba else "predict",))
        if "predict_proba" in self.settings.outputs and not self.is_classifier:
            raise ValueError(f"PREDICT_PROBA is set but objective {self.objective} has no "
                             "class probabilities")
        self.output_specs = {spec.name: spec for spec in self.outputs()}
        if not any(self.categorical):
            self.fast = MatrixPredictor.create(self.booster, self.num_class)
        log.info("loaded %s: %s, %d features, %d class(es), nthread=%d%s", self.path,
                 self.objective, self.booster.num_feature(), self.num_class, self.nthread,
                 "" if self.fast or any(self.categorical) else " (Booster.predict)")
        return True

    def _feature_types(self, header: dict[str, str]) -> tuple[list[str], list[bool]]:
        """Each feature's datatype, and whether it goes to LightGBM as a pandas category.
        Categorical features list their values in `feature_infos` (numeric ones a [min:max]
        range); a model fit on pandas categories stores them in `pandas_categorical`, in the
        order of its categorical features: text (BYTES) or integers (INT64). Categorical
        features fit on integer codes take those codes (INT64)."""
        infos = header.get("feature_infos", "").split(" ")
        is_category = [bool(info) and info != "none" and not info.startswith("[")
                       for info in infos]
        stored = iter(self.booster.pandas_categorical or [])
        datatypes, as_pandas = [], []
        for category in is_category:
            categories = next(stored, None) if category else None
            if categories is None:
                datatypes.append("INT64" if category else "FP64")
                as_pandas.append(False)
            else:
                text = any(isinstance(c, str) for c in categories)
                datatypes.append("BYTES" if text else "INT64")
                as_pandas.append(True)
        return datatypes, as_pandas

    @property
    def is_classifier(self) -> bool:
        return self.objective in CLASSIFIER_OBJECTIVES

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return self.features.specs()

    def outputs(self) -> list[TensorSpec]:
        predict = [-1, self.num_class] if self.num_class > 1 else [-1]
        specs = [TensorSpec("predict", "FP64", predict)]
        if self.is_classifier:
            specs.append(TensorSpec("predict_proba", "FP64", [-1, max(self.num_class, 2)]))
            specs.append(TensorSpec("label", "INT64", [-1]))
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
        if len(data) == 0:  # LightGBM refuses an empty matrix
            return {name: np.empty([0, *specs[name].shape[1:]],
                                   np.int64 if name == "label" else np.float64)
                    for name in wanted}
        threads = max(1, min(self.nthread, len(data) // ROWS_PER_THREAD))
        if self.fast is not None and isinstance(data, np.ndarray):
            values = self.fast.predict(data, threads)
        else:
            values = self.booster.predict(data, num_threads=threads)
        results = {}
        for name in wanted:
            if name == "predict":
                results[name] = values
            elif name == "predict_proba":
                results[name] = self._proba(values)
            else:
                results[name] = self._label(values)
        return results

    def _proba(self, values: np.ndarray) -> np.ndarray:
        """As LGBMClassifier.predict_proba: [rows, classes], also [rows, 2] for binary."""
        if values.ndim == 1:
            return np.stack([1.0 - values, values], axis=1)
        return values

    def _label(self, values: np.ndarray) -> np.ndarray:
        """As LGBMClassifier.predict: the class index."""
        if values.ndim == 1:
            return (values > 0.5).astype(np.int64)
        return np.argmax(values, axis=1).astype(np.int64)

    # -- request to features --------------------------------------------------------------------
    def features_of(self, request: InferRequest) -> Any:
        data = self.features.read(request)
        if any(self.categorical):
            if isinstance(data, np.ndarray):
                raise InvalidInput(
                    f"model '{self.name}' has categorical features: send one input per feature "
                    f"({', '.join(self.features.names)}), or v1 instances as JSON objects")
            return self.features.category_frame(data, self.categorical, np.float64)
        if isinstance(data, np.ndarray):
            require_numbers("the input", data)
            if data.dtype.kind == "b" or data.dtype.char == "e":  # BOOL, float16
                data = data.astype(np.float32)
            elif not data.flags.aligned:
                # A binary tensor at an odd offset of the request body: LightGBM reads rows as
                # C doubles, so it gets an aligned copy.
                return data.copy()
            return np.ascontiguousarray(data)
        return number_matrix(data, np.float64)


# -- finding and loading ------------------------------------------------------------------------
def looks_like_lightgbm(path: Path) -> bool:
    """Whether a file is a LightGBM text model (or one of its JSON dumps), by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if path.suffix == ".json":
        return head.startswith(b'{"name":"tree"')
    return head.startswith(TEXT_MODEL)


def _lightgbm_files(found: list[Path]) -> list[Path]:
    return [p for p in found if looks_like_lightgbm(p)] or found


def load_booster(path: Path):
    import lightgbm as lgb

    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"cannot load {path}: the file is empty")
    if head.lstrip().startswith(b"{"):
        raise ValueError(f"{path} is a JSON dump of a LightGBM model (Booster.dump_model), "
                         "which LightGBM cannot load; save the model with "
                         "Booster.save_model('model.bst') (its text format) and serve that")
    if not head.startswith(TEXT_MODEL):
        raise ValueError(f"{path} is not a LightGBM text model (it should begin with 'tree'); "
                         "save the model with Booster.save_model('model.bst')")
    try:
        return lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ValueError(f"cannot load {path} (this server has lightgbm {lgb.__version__}): "
                         f"{exc}") from None


def read_header(path: Path) -> dict[str, str]:
    """The `key=value` lines that open a text model, before its first tree."""
    header = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("Tree="):
                break
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                header[key] = value
    return header
