"""MLflow's own scoring protocol, beside KServe v1 and v2: `POST /invocations`, `GET /ping`,
`GET /health` and `GET /version`, so MLflow clients work unchanged. The routes are MLflowModel's
(see its `route` methods); the data plane runs them like any inference request, so queue limits,
timeouts, metrics and statistics are v2's, and their errors are v2's in MLflow's body.

Requests are parsed by MLflow's own parsers (the same dtype casts by signature as `mlflow models
serve`), with orjson in front and behind. Errors differ from MLflow's server in two ways: no body
carries a stack trace (MLflow's carries one in `stack_trace`), and a model that raises is a 500,
not a 400. Error bodies keep MLflow's `error_code` and `message` and add this server's `error`:
`{"error": msg, "error_code": "BAD_REQUEST", "message": msg}`.
"""

from __future__ import annotations

from io import BytesIO, StringIO
from typing import Any

import orjson

from modelserver import Reply, RouteRequest, ServingError

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = [CSV, JSON, PARQUET]
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
REQUIRED_FORMAT = ("The input must be a JSON dictionary with exactly one of the input fields "
                   f"{set(FORMATS)}")
# MLflow error codes by HTTP status, as mlflow.exceptions maps them.
ERROR_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST",
               415: "BAD_REQUEST", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE",
               504: "DEADLINE_EXCEEDED"}

MAX_MESSAGE = 1000


class ScoringError(ServingError):
    """A request MLflow's scoring server refuses, with its status and MLflow error code."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR")


def error_reply(exc: ServingError) -> Reply:
    """Any error of an MLflow route in MLflow's body, with this server's `error` beside."""
    code = getattr(exc, "error_code", None) or ERROR_CODES.get(exc.status, "INTERNAL_ERROR")
    message = exc.message
    return exc.status, orjson.dumps({"error": message, "error_code": code,
                                     "message": message}), JSON


def short(message: str) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " ..."


# -- the handler --------------------------------------------------------------------------------
async def invocations(model, request: RouteRequest) -> Reply:
    """Answer one `POST /invocations` to an MLflowModel as MLflow's scoring server does."""
    data, params, unwrapped = parse(model, request.body, request.headers.get("content-type"))
    predictions = await request.run(model.call, data, params)
    return 200, encode(predictions, unwrapped), JSON


def parse(model, body: bytes, content_type: str | None) -> tuple[Any, Any, bool]:
    """The request as (model input, params, whether it was the unwrapped LLM format)."""
    mime, charset, extra = _content_type(content_type)
    if charset != "utf-8":
        raise ScoringError(415, "The scoring server only supports UTF-8")
    if extra:
        raise ScoringError(415, f"Unrecognized content type parameters: {', '.join(extra)}")
    schema = model.input_schema
    if mime == CSV:
        return _mlflow_call(_parse_csv, body, schema), None, False
    if mime == PARQUET:
        return _mlflow_call(_parse_parquet, body), None, False
    if mime != JSON:
        raise ScoringError(415, f"This predictor only supports the following content types: "
                                f"{CONTENT_TYPES}. Got '{content_type}'.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ScoringError(400, f"Ensure that input is a valid JSON formatted string. "
                                f"Error: {exc}") from None
    if not isinstance(payload, dict):
        what = "a list" if isinstance(payload, list) else f"a {type(payload).__name__}"
        raise ScoringError(400, f"{REQUIRED_FORMAT}. Received {what}.")
    from mlflow.pyfunc.utils.serving_data_parser import is_unified_llm_input

    if is_unified_llm_input(payload):  # chat/completions-style bodies, given to the model as is
        names = {p.name for p in model.params_schema.params} if model.params_schema else set()
        data = {k: v for k, v in payload.items() if k not in names}
        params = {k: v for k, v in payload.items() if k in names}
        return data, params, True
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise ScoringError(400, "'params' must be a JSON object")
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise ScoringError(400, f"{REQUIRED_FORMAT}. Received dictionary with input fields: "
                                f"{list(payload)}.")
    if model.type_hint_signature:  # the model parses its own input
        if keys[0] != "inputs":
            raise ScoringError(400, "Request payload must be a dictionary with 'inputs' key when "
                                    f"the model contains a valid type hint. Found keys in "
                                    f"payload: {list(payload)}.")
        return payload["inputs"], params, False
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    return _mlflow_call(infer_and_parse_data, {keys[0]: payload[keys[0]]}, schema), params, False


def _content_type(header: str | None) -> tuple[str, str, list[str]]:
    parts = [p.strip() for p in (header or JSON).split(";")]
    values = {key.strip().lower(): value.strip() for key, _, value in
              (p.partition("=") for p in parts[1:] if p)}
    charset = values.pop("charset", "utf-8").strip('"').lower()
    return parts[0].lower(), charset, sorted(values)


def _parse_csv(body: bytes, schema):
    from mlflow.pyfunc.scoring_server import parse_csv_input

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScoringError(400, f"Ensure that input is a valid UTF-8 encoded string. "
                                f"Error: {exc}") from None
    return parse_csv_input(csv_input=StringIO(text), schema=schema)


def _parse_parquet(body: bytes):
    from mlflow.pyfunc.scoring_server import parse_parquet_input

    return parse_parquet_input(parquet_input=BytesIO(body))


def _mlflow_call(fn, *args):
    """MLflow's parsers raise MlflowException (with a stack trace attached, for their server's
    body): keep the message and the code only."""
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args)
    except ScoringError:
        raise
    except MlflowException as exc:
        code = exc.error_code
        status = exc.get_http_status_code()
        raise ScoringError(status if 400 <= status < 500 else 400, short(exc.message),
                           code) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ScoringError(400, f"the input does not fit the model's signature: "
                                f"{short(str(exc))}") from None


def encode(predictions: Any, unwrapped: bool = False) -> bytes:
    """`{"predictions": ...}` as MLflow writes it (DataFrames as records), by orjson."""
    jsonable = jsonable_predictions(predictions)
    return _dumps(jsonable if unwrapped else {"predictions": jsonable})


def jsonable_predictions(data: Any) -> Any:
    """mlflow.utils.proto_json_utils._get_jsonable_obj, with records for pandas."""
    import numpy as np
    import pandas as pd

    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, pd.DataFrame):
        return data.to_dict(orient="records")
    if isinstance(data, pd.Series):
        return pd.DataFrame(data).to_dict(orient="records")
    if isinstance(data, dict):
        return {k: jsonable_predictions(v) for k, v in data.items()}
    return data


def _dumps(obj: Any) -> bytes:
    from modelserver.protocol.v2json import dumps

    try:
        return dumps(obj)
    except TypeError:  # whatever orjson cannot write: MLflow's own encoder
        import json

        from mlflow.utils.proto_json_utils import NumpyEncoder

        return json.dumps(obj, cls=NumpyEncoder).encode()
