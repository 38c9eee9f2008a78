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
from modelserver.runtime.tabular import Features, as_text
from modelserver.runtime.versions import SavedWith

from .forest import Forest
from .linear import Linear
from .saved import saved_sklearn_version

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
        self.features = Features(name)
        # The model's own evaluator, when it has one: a forest's or a linear model's.
        self.fast: Forest | Linear | None = None

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
        self.features = Features.of(
            self.name, getattr(self.estimator, "feature_names_in_", None),
            getattr(self.estimator, "n_features_in_", None),
            {k: v for k, v in input_datatypes(self.estimator).items() if v},
            overrides=self.settings.inputs)
        self.fast = Forest.create(self.estimator) or Linear.create(self.estimator)
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
        return self.features.specs()

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
        features = self.features_of(request)
        wanted = request.output_names or ["predict"]
        results = {}
        for name in wanted:
            if name not in OUTPUTS or (name == "predict_proba" and not self._has_proba()):
                available = [o.name for o in self.outputs()]
                raise InvalidInput(
                    f"model '{self.name}' has no output '{name}'; it has {', '.join(available)}"
                )
            try:
                results[name] = self._call(name, features)
            except (ValueError, TypeError) as exc:  # sklearn's word for input it cannot use
                raise InvalidInput(f"model '{self.name}' cannot use this input: {exc}") from None
        return results

    def _call(self, output: str, features: Any) -> np.ndarray:
        """The estimator's `predict` or `predict_proba`, through the model's own evaluator where
        it has one for that output and these features."""
        if self.fast is not None and output in self.fast.outputs:
            rows = self.fast.rows(features)
            if rows is not None:
                return getattr(self.fast, output)(rows)
        return getattr(self.estimator, output)(features)

    def features_of(self, request: InferRequest) -> Any:
        """A plain array for a model fit on one; a DataFrame with the columns' names for a model
        fit on a DataFrame (and for columns sent to a model without names)."""
        if self.features.width is None and len(request.inputs) == 1:
            rows = as_text(request.inputs[0].data)
            if rows.ndim == 1 and rows.dtype.kind in "OUS":
                return rows  # a text pipeline (a vectorizer first) takes one document per row
        data = self.features.read(request)
        if type(data) is np.ndarray and self.features.names is None:
            return data
        return self.features.frame(data)


def input_datatypes(estimator: Any) -> dict[str, str]:
    """The datatypes of a DataFrame-fit model's columns that its fitted encoders tell: a
    OneHotEncoder's or OrdinalEncoder's categories are text (BYTES) or integers (INT64), in a
    ColumnTransformer, at the start of a Pipeline or alone. Other columns stay unknown."""
    while hasattr(estimator, "steps"):  # a Pipeline: its first step sees the request's columns
        estimator = estimator.steps[0][1]
    names = [str(n) for n in getattr(estimator, "feature_names_in_", ())]
    found: dict[str, str] = {}
    if hasattr(estimator, "transformers_"):  # a ColumnTransformer
        for _, transformer, columns in estimator.transformers_:
            selected = _column_names(columns, names)
            found.update(zip(selected, _encoded_datatypes(transformer, len(selected))))
    else:
        found.update(zip(names, _encoded_datatypes(estimator, len(names))))
    return found


def _column_names(columns: Any, names: list[str]) -> list[str]:
    if isinstance(columns, (str, int, np.integer)):
        columns = [columns]
    try:
        selected = list(columns)
    except TypeError:  # a slice or a callable: no column-wise types to tell
        return []
    if selected and all(isinstance(c, (bool, np.bool_)) for c in selected):  # a mask
        return [name for name, keep in zip(names, selected) if keep]
    return [names[c] if isinstance(c, (int, np.integer)) and c < len(names) else str(c)
            for c in selected]


def _encoded_datatypes(transformer: Any, count: int) -> list[str | None]:
    while hasattr(transformer, "steps"):
        transformer = transformer.steps[0][1]
    categories = getattr(transformer, "categories_", None)
    if categories is None or len(categories) != count:
        return []
    return [_category_datatype(np.asarray(c)) for c in categories]


def _category_datatype(categories: np.ndarray) -> str | None:
    kind = categories.dtype.kind
    if kind in "OUS":
        values = [c for c in categories.tolist() if c is not None and c == c]  # not NaN
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                          for v in values):
            return "INT64"
        return "BYTES"
    return "INT64" if kind in "iu" else None


def load_estimator(path: Path) -> Any:
    """The estimator in `path`. One saved by another scikit-learn is logged with both versions
    (scikit-learn warns of it as it unpickles); when the load fails, its error names them and
    the image that has the saving version."""
    import sklearn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = _load_skops(path) if path.suffix == ".skops" else _load_pickle(path)
        except Exception as exc:
            saved = _warned_version(caught) or saved_sklearn_version(path)
            advice = SavedWith("scikit-learn", __name__, saved, sklearn.__version__).advice()
            if not advice:
                raise
            raise RuntimeError(f"could not load {path.name}: {exc}{advice}") from None
    SavedWith("scikit-learn", __name__, _warned_version(caught),
              sklearn.__version__).log_difference(path.name)
    log.info("loaded %s (%s)", path, type(estimator).__name__)
    return estimator


def _warned_version(caught: list[warnings.WarningMessage]) -> str | None:
    """The saving version from scikit-learn's InconsistentVersionWarning, if it warned."""
    for warning in caught:
        saved = getattr(warning.message, "original_sklearn_version", None)
        if saved:
            return str(saved)
    return None


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
