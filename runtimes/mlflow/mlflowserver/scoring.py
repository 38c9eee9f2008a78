"""MLflow's own scoring protocol, beside KServe v1 and v2: `POST /invocations`, `GET /ping`,
`GET /health` and `GET /version`, so MLflow clients work unchanged.

Requests are parsed by MLflow's own parsers (the same dtype casts by signature as `mlflow models
serve`), with orjson in front and behind. Errors differ from MLflow's server in two ways: no body
carries a stack trace (MLflow's carries one in `stack_trace`), and a model that raises is a 500,
not a 400. Error bodies keep MLflow's `error_code` and `message` and add this server's `error`:
`{"error": msg, "error_code": "BAD_REQUEST", "message": msg}`.
"""

from __future__ import annotations

import asyncio
import logging
from io import BytesIO, StringIO
from typing import Any

import orjson

from modelserver.errors import ServingError, Unavailable

from .model import MLflowModel, short

log = logging.getLogger(__name__)

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

Reply = tuple[int, bytes, str]


class ScoringError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR")


def error_reply(status: int, message: str, error_code: str | None = None) -> Reply:
    code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR")
    return status, orjson.dumps({"error": message, "error_code": code, "message": message}), JSON


# -- the handler --------------------------------------------------------------------------------
async def invocations(model: MLflowModel, body: bytes, content_type: str | None,
                      dataplane: Any = None) -> Reply:
    """Answer one `POST /invocations` as MLflow's scoring server does: (status, body, type).

    With `dataplane`, predict runs under its limits (queue size, timeout) and in its executor."""
    try:
        data, params, unwrapped = parse(model, body, content_type)
        predictions = await _guarded(model, dataplane, model.call, data, params)
        return 200, encode(predictions, unwrapped), JSON
    except ScoringError as exc:
        return error_reply(exc.status, exc.message, exc.error_code)
    except ServingError as exc:  # InvalidInput from the model's own checks, limits, ...
        return error_reply(exc.status, exc.message)
    except Exception as exc:
        log.exception("model '%s' failed", model.name)
        return error_reply(500, f"model '{model.name}' failed: {type(exc).__name__}: "
                                f"{short(str(exc))}")


def parse(model: MLflowModel, body: bytes, content_type: str | None) -> tuple[Any, Any, bool]:
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


async def _guarded(model: MLflowModel, dataplane: Any, fn, *args) -> Any:
    """Run `fn` as the data plane runs predict: within the model's queue limit and the request
    timeout, in the data plane's executor when the model predicts in a thread."""
    if dataplane is None:
        return fn(*args)
    limits = dataplane.limits
    if model.inflight >= limits.max_queue:
        raise Unavailable(f"model '{model.name}' has {model.inflight} requests waiting, its "
                          "limit; try again later")
    model.inflight += 1
    try:
        if not model.predict_in_thread:
            return fn(*args)
        work = asyncio.get_running_loop().run_in_executor(dataplane.executor, fn, *args)
        if not limits.request_timeout:
            return await work
        try:
            async with asyncio.timeout(limits.request_timeout):
                return await work
        except TimeoutError:
            raise ScoringError(504, f"model '{model.name}' did not answer within "
                                    f"{limits.request_timeout:g}s") from None
    finally:
        model.inflight -= 1


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


# -- routes for the REST app (see core-hook.patch) ----------------------------------------------
def _served_model(dataplane) -> MLflowModel:
    models = [m for m in dataplane.repository.models() if isinstance(m, MLflowModel)]
    if not models:
        raise ScoringError(404, "no MLflow model is served here")
    if len(models) > 1:
        names = ", ".join(m.name for m in models)
        raise ScoringError(400, f"several MLflow models are served ({names}); /invocations "
                                "serves one: use /v2/models/<name>/infer")
    model = models[0]
    if not model.ready:
        raise ScoringError(503, f"model '{model.name}' is not ready")
    return model


def _headers(content_type: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode())]


async def invocations_route(dataplane, body: bytes, headers: dict[str, str]):
    try:
        model = _served_model(dataplane)
    except ScoringError as exc:
        status, payload, ctype = error_reply(exc.status, exc.message, exc.error_code)
    else:
        status, payload, ctype = await invocations(model, body, headers.get("content-type"),
                                                   dataplane)
    return status, payload, _headers(ctype)


async def ping_route(dataplane, body: bytes, headers: dict[str, str]):
    """200 once every model has loaded (MLflow's server answers only after loading)."""
    if dataplane.ready():
        return 200, b"\n", _headers(JSON)
    status, payload, ctype = error_reply(503, "the model is not ready")
    return status, payload, _headers(ctype)


async def version_route(dataplane, body: bytes, headers: dict[str, str]):
    import mlflow

    return 200, mlflow.__version__.encode(), _headers(JSON)


ROUTES = {
    "/invocations": {"POST": invocations_route},
    "/ping": {"GET": ping_route},
    "/health": {"GET": ping_route},
    "/version": {"GET": version_route},
}
