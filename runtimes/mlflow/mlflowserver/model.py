"""An MLflow pyfunc model folder (one with an `MLmodel` file), served by its signature.

Inputs and outputs in v2 metadata come from the model's signature. A column-based signature gets
a pandas DataFrame with the signature's column names (one v2 input per column, one [rows, columns]
input, or v1 instances as JSON objects); a tensor-based one gets numpy arrays (a dict of them when
the tensors are named). Values are cast to the signature's types the way MLflow's own scoring
server casts JSON, and anything that does not fit is a 400 that names what was expected."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import (
    InferRequest,
    InvalidInput,
    Model,
    RouteRequest,
    Tensor,
    TensorSpec,
    Unavailable,
)
from modelserver.datatypes import from_numpy
from modelserver.model import route
from modelserver.runtime.tabular import Features, as_text, column_of, datatype_of_values
from modelserver.runtime.versions import SavedWith

from . import scoring
from .scoring import short

log = logging.getLogger(__name__)

MLMODEL = "MLmodel"
# An unnamed single output of the model is called what MLflow's own server calls it.
DEFAULT_OUTPUT = "predictions"
# MLflow error codes that mean the request did not fit the model.
BAD_INPUT_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"}

# MLflow column types as Open Inference Protocol datatypes.
COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",  # ISO 8601 strings
}


class MLflowModel(Model):
    platform = "mlflow"
    # A pyfunc model may be anything: it is not assumed row-wise (--max_batch_size turns
    # batching on for models that are).
    defaults = {"max_batch_size": 0}
    # MLflow's own scoring server runs predict in a worker thread too; this keeps probes
    # answering during a long prediction, and lets frameworks that release the GIL overlap.
    predict_in_thread = True

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.pyfunc: Any = None
        self.input_schema: Any = None
        self.output_schema: Any = None
        self.params_schema: Any = None
        self.tensor_based = False
        self.type_hint_signature = False
        self.output_names: list[str] = []
        self.table = Features(name)  # a column signature's columns

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        return (Path(folder) / MLMODEL).is_file()

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> bool:
        folder = Path(self.model_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"model directory {folder} does not exist")
        if not (folder / MLMODEL).is_file():
            present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
            raise FileNotFoundError(f"no MLflow model in {folder}: expected an {MLMODEL} file; "
                                    f"found {present}")
        self.pyfunc = load_pyfunc(folder)
        _saved_with(folder).log_difference(str(folder))
        metadata = self.pyfunc.metadata
        self.input_schema = metadata.get_input_schema()
        self.output_schema = metadata.get_output_schema()
        self.params_schema = metadata.get_params_schema()
        self.tensor_based = bool(self.input_schema is not None
                                 and self.input_schema.is_tensor_spec())
        is_hint = getattr(metadata, "_is_signature_from_type_hint", None)
        self.type_hint_signature = bool(is_hint and is_hint())
        if self.input_schema is not None and not self.tensor_based:
            named = self.input_schema.has_input_names()
            self.table = Features.of(
                self.name, self.input_schema.input_names() if named else None,
                len(self.input_schema.inputs), [s.datatype for s in _specs(self.input_schema,
                                                                           "input")],
                overrides=self.settings.inputs)
        elif self.input_schema is None:
            self.table = self._example_columns(folder)
        self.output_names = [spec.name for spec in self.outputs()]
        log.info("loaded MLflow model %s (%s; %s signature)", folder,
                 metadata.flavors.get("python_function", {}).get("loader_module", "pyfunc"),
                 "no" if self.input_schema is None else
                 "tensor" if self.tensor_based else "column")
        return True

    def _example_columns(self, folder: Path) -> Features:
        """A model saved without a signature but with an input example (a DataFrame) has the
        example's columns and their types, for metadata."""
        example = self._input_example(folder)
        columns = getattr(example, "columns", None)
        if columns is None:
            return Features(self.name)
        return Features.of(self.name, columns, datatypes={
            str(c): datatype_of_values(example[c]) for c in columns},
            overrides=self.settings.inputs)

    def _input_example(self, folder: Path) -> Any:
        """The input example MLflow saved with the model; None when there is none (a missing or
        unreadable example only costs the metadata and warmup that would use it)."""
        try:
            return self.pyfunc.metadata.load_input_example(str(folder))
        except Exception as exc:
            log.warning("%s: cannot read the input example: %s", folder, short(str(exc)))
            return None

    def example_request(self) -> InferRequest | None:
        """For warmup: the model's input example when it is a table of the inputs' columns (a
        request the model is known to take); zeros shaped as its metadata otherwise."""
        specs = self.inputs()
        example = self._input_example(Path(self.model_dir))
        columns = {str(c) for c in getattr(example, "columns", ())}
        if not specs or any(spec.name not in columns or len(spec.shape) != 1 for spec in specs):
            return super().example_request()
        return InferRequest([Tensor.from_numpy(spec.name, example[spec.name].to_numpy())
                             for spec in specs])

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        if self.input_schema is not None and not self.tensor_based:
            return self.table.specs()  # unnamed columns: one [rows, columns] input
        if self.input_schema is None and self.table.names is not None:
            return self.table.specs()  # the input example's columns
        return _specs(self.input_schema, "input")

    def outputs(self) -> list[TensorSpec]:
        specs = _specs(self.output_schema, "output")
        if len(specs) == 1 and specs[0].name == "output-0":
            specs[0].name = DEFAULT_OUTPUT
        return specs

    # -- inference ------------------------------------------------------------------------------
    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        data = self.model_input(request)
        params = self._params(request.parameters)
        return self.as_outputs(self.call(data, params))

    def call(self, data: Any, params: dict | None) -> Any:
        """The pyfunc's predict; MLflow's complaints about the input become 400s."""
        from mlflow.exceptions import MlflowException

        data = self._columns_of_matrix(data)
        self._check_frame(data)
        try:
            if params:
                return self.pyfunc.predict(data, params=params)
            return self.pyfunc.predict(data)
        except MlflowException as exc:
            if exc.error_code in BAD_INPUT_CODES:
                raise InvalidInput(f"model '{self.name}': {short(exc.message)}") from None
            raise

    def _columns_of_matrix(self, data: Any) -> Any:
        """Rows as lists (`{"instances": [[...]]}` at /invocations) for a model with named
        columns: the signature's columns in order, as v1 and v2 take them. (MLflow's own server
        refuses these.)"""
        schema = self.input_schema
        if (isinstance(data, np.ndarray) and data.ndim == 2 and schema is not None
                and not self.tensor_based and schema.has_input_names()):
            return self._typed_frame(self.table.matrix("instances", data), schema.inputs)
        return data

    def _check_frame(self, data: Any) -> None:
        """Missing columns, said plainly (MLflow's message quotes the whole input)."""
        schema = self.input_schema
        if schema is None or self.tensor_based or not schema.has_input_names():
            return
        columns = getattr(data, "columns", None)
        if columns is None:
            return
        present = set(columns)
        missing = [n for n in schema.required_input_names() if n not in present]
        if missing:
            raise InvalidInput(f"model '{self.name}' expects columns "
                               f"{_listing(schema.input_names())}; missing {_listing(missing)}")

    def _params(self, parameters: dict | None) -> dict | None:
        if not parameters or self.params_schema is None:
            return None
        names = {spec.name for spec in self.params_schema.params}
        return {k: v for k, v in parameters.items() if k in names} or None

    # -- request to model input -----------------------------------------------------------------
    def model_input(self, request: InferRequest) -> Any:
        columns = {t.name: t.data for t in request.inputs}
        schema = self.input_schema
        if schema is None:
            return self._unsigned(columns)
        if self.tensor_based:
            return self._tensors(columns, schema)
        return self._frame(request, schema)

    def _unsigned(self, columns: dict[str, np.ndarray]) -> Any:
        """No signature: one input as itself; several 1-D ones as DataFrame columns."""
        arrays = {name: as_text(array) for name, array in columns.items()}
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        flat = {name: column_of(name, a) for name, a in arrays.items()}
        if len({len(a) for a in flat.values()}) == 1:
            import pandas as pd

            return pd.DataFrame(flat)
        return arrays

    def _tensors(self, columns: dict[str, np.ndarray], schema) -> Any:
        specs = schema.inputs
        if len(specs) == 1 and (specs[0].name is None or len(columns) == 1):
            if len(columns) != 1:
                raise InvalidInput(f"model '{self.name}' takes one input, got {len(columns)}")
            name, array = next(iter(columns.items()))
            array = _fit_tensor(name, array, specs[0])
            # A named tensor goes in as {name: array}, as MLflow's own parsing hands it over.
            return array if specs[0].name is None else {specs[0].name: array}
        expected = [spec.name for spec in specs]
        _check_names(self.name, columns, expected, [s.name for s in specs if s.required])
        return {spec.name: _fit_tensor(spec.name, columns[spec.name], spec)
                for spec in specs if spec.name in columns}

    def _frame(self, request: InferRequest, schema) -> Any:
        """A column signature's DataFrame: the request's columns (or one matrix's, in the
        signature's order), each cast to its column type."""
        specs = schema.inputs
        required = [s.name for s in specs if s.required] if schema.has_input_names() else None
        # binary columns keep their bytes; _fit_column decodes the others' text
        data = self.table.read(request, required, text=False)
        return self._typed_frame(data, specs)

    def _typed_frame(self, data: np.ndarray | dict[str, np.ndarray], specs) -> Any:
        import pandas as pd

        names = [spec_name(spec, i) for i, spec in enumerate(specs)]
        if isinstance(data, np.ndarray):
            pairs = [(i, data[:, i]) for i in range(len(specs))]
        else:  # columns by name, or by position ("0", "1", ...) for unnamed ones
            position = {str(name): i for i, name in enumerate(names)}
            pairs = [(position[key], column) for key, column in data.items()]
        return pd.DataFrame({names[i]: _fit_column(names[i], column, specs[i])
                             for i, column in pairs})

    # -- model output to tensors ----------------------------------------------------------------
    def as_outputs(self, result: Any) -> dict[str, np.ndarray]:
        import pandas as pd

        names = self.output_names
        if isinstance(result, pd.DataFrame):
            return {str(col): _tensor_values(result[col].to_numpy()) for col in result.columns}
        if isinstance(result, dict):
            return {str(k): _tensor_values(_as_array(v)) for k, v in result.items()}
        if isinstance(result, pd.Series):
            result = result.to_numpy()
        name = names[0] if len(names) == 1 else DEFAULT_OUTPUT
        return {name: _tensor_values(_as_array(result))}


    # -- MLflow's scoring protocol (scoring.py) ------------------------------------------------
    @route("POST", "/invocations", error=scoring.error_reply)
    async def invocations(self, request: RouteRequest) -> scoring.Reply:
        return await scoring.invocations(self, request)

    @route("GET", "/ping", inference=False, error=scoring.error_reply)
    @route("GET", "/health", inference=False, error=scoring.error_reply)
    async def ping(self, request: RouteRequest) -> scoring.Reply:
        """200 once the model has loaded (MLflow's server answers only after loading)."""
        if not self.ready:
            raise Unavailable("the model is not ready")
        return 200, b"\n", scoring.JSON

    @route("GET", "/version", inference=False, error=scoring.error_reply)
    async def mlflow_version(self, request: RouteRequest) -> scoring.Reply:
        import mlflow

        return 200, mlflow.__version__.encode(), scoring.JSON


def spec_name(spec, index: int):
    return spec.name if spec.name is not None else index


def _specs(schema, prefix: str) -> list[TensorSpec]:
    if schema is None:
        return []
    specs = []
    for i, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else f"{prefix}-{i}"
        if schema.is_tensor_spec():
            datatype = _datatype_of_numpy(spec.type)
            shape = [int(d) for d in spec.shape]
        else:
            datatype = COLUMN_DATATYPES.get(getattr(spec.type, "name", ""), "BYTES")
            shape = [-1]
        specs.append(TensorSpec(str(name), datatype, shape))
    return specs


def _datatype_of_numpy(dtype: np.dtype) -> str:
    try:
        return from_numpy(np.dtype(dtype))
    except (TypeError, ValueError):
        return "BYTES"


def _check_names(model: str, columns: dict, expected: list, required: list) -> None:
    unknown = [n for n in columns if n not in expected]
    missing = [n for n in required if n not in columns]
    if unknown or missing:
        problems = ([f"missing {_listing(missing)}"] if missing else []) + \
            ([f"unknown {_listing(unknown)}"] if unknown else [])
        raise InvalidInput(f"model '{model}' expects inputs {_listing(expected)}; "
                           f"{'; '.join(problems)}")


def _listing(names) -> str:
    return ", ".join(str(n) for n in names)


def _fit_column(name, values: np.ndarray, spec) -> np.ndarray:
    """A column cast to its ColSpec type as MLflow's JSON parser would, or a 400."""
    type_name = getattr(spec.type, "name", None)
    if type_name not in COLUMN_DATATYPES:  # Array, Object, Map, Any: MLflow checks these
        return as_text(values)
    if type_name == "binary":
        return values if values.dtype == object else values.astype(object)
    if type_name in ("string", "datetime"):
        if values.dtype.kind in "fiub":
            raise InvalidInput(f"input '{name}' must be strings (BYTES) for column type "
                               f"{type_name}, got {from_numpy(values.dtype)}")
        values = as_text(values)
        if type_name == "datetime":
            try:
                return values.astype("datetime64[ns]")
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"input '{name}' is not ISO 8601 datetimes: {exc}") from None
        return values
    return _cast(name, values, np.dtype(spec.type.to_numpy()), type_name)


def _fit_tensor(name, array: np.ndarray, spec) -> np.ndarray:
    dtype = np.dtype(spec.type)
    if dtype.kind in "OUS":
        if array.dtype.kind in "fiub":
            raise InvalidInput(f"input '{name}' must be strings (BYTES), got "
                               f"{from_numpy(array.dtype)}")
        array = as_text(array)
    else:
        array = _cast(name, array, dtype, str(dtype))
    shape = [int(d) for d in spec.shape]
    if len(shape) != array.ndim or any(d not in (-1, s) for d, s in zip(shape, array.shape)):
        raise InvalidInput(f"input '{name}' has shape {list(array.shape)}; the model expects "
                           f"{shape} (-1: any size)")
    return array


def _cast(name, values: np.ndarray, target: np.dtype, type_name: str) -> np.ndarray:
    if values.dtype == target:
        return values
    source = values.dtype
    expected = f"{from_numpy(target)} ({type_name})"
    if source.kind not in "fiub":
        raise InvalidInput(f"input '{name}' must be numbers of type {expected}, got "
                           f"{from_numpy(source)}")
    if (target.kind == "b") != (source.kind == "b"):
        raise InvalidInput(f"input '{name}' must be {expected}, got {from_numpy(source)}")
    if target.kind in "iu" and source.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.floor(values)):
            raise InvalidInput(f"input '{name}' must be whole numbers for {expected}, got "
                               f"fractions in {from_numpy(source)}")
    if target.kind in "iu":
        info = np.iinfo(target)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise InvalidInput(f"input '{name}' has values outside {expected}")
    return values.astype(target)


def _as_array(value: Any) -> np.ndarray:
    import pandas as pd

    if isinstance(value, (pd.Series, pd.Index)):
        return value.to_numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        try:
            array = np.asarray(value)
            if array.dtype != object:
                return array
        except ValueError:
            pass
        out = np.empty(len(value), dtype=object)
        out[:] = [v for v in value]
        return out
    return np.asarray([value])


def _tensor_values(array: np.ndarray) -> np.ndarray:
    """Arrays whose dtype the v2 protocol carries: datetimes as ISO strings, anything else that
    is not a number or a string as its JSON text."""
    kind = array.dtype.kind
    if kind in "fiub" or kind == "U" or kind == "S":
        return array
    if kind in "Mm":
        return array.astype(str).astype(object)
    flat = array.reshape(-1)
    out = np.empty(flat.size, dtype=object)
    for i, value in enumerate(flat):
        out[i] = value if isinstance(value, (str, bytes)) else _json_text(value)
    return out.reshape(array.shape)


def _json_text(value: Any) -> str:
    from modelserver.protocol.v2json import dumps

    try:
        return dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


def load_pyfunc(folder: Path):
    """mlflow.pyfunc.load_model, as MLflow's scoring server calls it, with errors that say
    what the model needs."""
    import mlflow
    from mlflow.pyfunc.scoring_server import load_model_with_mlflow_config

    # MLflow's own server sets this; some flavors read it.
    os.environ.setdefault("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
    try:
        return load_model_with_mlflow_config(str(folder))
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top and top != exc.name and importlib.util.find_spec(top) is not None:
            # The package is here but not that module: the model was saved by another version.
            raise ValueError(
                f"cannot load the MLflow model in {folder}: it refers to module '{exc.name}', "
                f"which {top} {_installed_version(top)} here does not have; the model was "
                f"{_saved_by(folder)}: re-save it with this version or serve it with the one it "
                f"was saved with") from None
        raise ValueError(f"the MLflow model in {folder} needs the Python package "
                         f"'{exc.name}', which this server does not have ({_saved_by(folder)}; "
                         f"see {folder / 'requirements.txt'})") from None
    except Exception as exc:
        raise ValueError(f"cannot load the MLflow model in {folder} ({_saved_by(folder)}; this "
                         f"server has mlflow {mlflow.__version__}): {type(exc).__name__}: "
                         f"{short(str(exc))}{_saved_with(folder).advice()}") from None


def _saved_with(folder: Path) -> SavedWith:
    """The MLflow that saved the model (its MLmodel file's `mlflow_version`), beside this one."""
    import mlflow

    try:
        text = (folder / MLMODEL).read_text()
    except OSError:
        text = ""
    match = re.search(r"^mlflow_version:\s*['\"]?([^\s'\"]+)", text, re.MULTILINE)
    return SavedWith("MLflow", __name__, match and match.group(1), mlflow.__version__)


def _saved_by(folder: Path) -> str:
    """Which MLflow and framework versions saved the model, from its MLmodel file."""
    try:
        from mlflow.models import Model as MLmodelFile

        meta = MLmodelFile.load(str(folder / MLMODEL))
    except Exception as exc:
        return f"its {MLMODEL} file does not read: {short(str(exc))}"
    parts = [f"saved by mlflow {meta.mlflow_version or 'unknown'}"]
    for flavor, conf in (meta.flavors or {}).items():
        version = next((v for k, v in conf.items() if k.endswith("_version")
                        and k != "python_version"), None)
        if flavor != "python_function" and version:
            parts.append(f"{flavor} {version}")
    return ", ".join(parts)


def _installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for dist in packages_distributions().get(package, [package]):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "(version unknown)"
