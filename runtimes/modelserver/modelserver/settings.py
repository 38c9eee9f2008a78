"""One typed settings object per model, resolved once and handed to the model.

A setting comes from the first of these that gives it: the server's flags, the model folder's
`settings.json`, the runtime's defaults (`Model.defaults`), the server's defaults. A runtime may
leave `max_batch_size` open (None) and decide it at load, from what it loaded
(`settings.default(max_batch_size=...)`); a model that leaves it open is not row-wise.

`max_batch_size` has Triton's meaning: the rows one framework call may take, for a model whose
predict is row-wise (0: it is not). Concurrent requests to such a model are merged into calls of
up to that many rows, unless `dynamic_batching` is off; a `max_batch_size` of 0 given for a
row-wise model turns that off and leaves its rows as they were, so clients that read the model's
configuration (perf_analyzer) still send it rows."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datatypes import TO_NUMPY

SETTINGS_FILE = "settings.json"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    # Rows one framework call may take when predict is row-wise along the first dimension; 0:
    # it is not. None: the runtime decides at load.
    max_batch_size: int | None = None
    # Merge concurrent requests to a row-wise model into calls of up to max_batch_size rows.
    dynamic_batching: bool = True
    # How long a batch may wait for more rows, in milliseconds; 0 takes what queued meanwhile.
    max_batch_delay_ms: float = 0.0
    # The outputs a v1 request gets; None: whatever predict returns.
    outputs: tuple[str, ...] | None = None
    # Requests inside the model at once; more are refused with 503.
    max_queue_size: int = 1000
    # A request not answered in time gets 504; 0 waits for ever.
    request_timeout_seconds: float = 120.0
    # Threads the framework may use in this worker (its share of the container's CPUs).
    threads: int = 1
    # Which installed runtime loads the folder (a repository may mix frameworks).
    runtime: str | None = None
    # What v2 metadata reports for some inputs, by name: ({"name": ..., "datatype": ...}, ...),
    # for a model that cannot tell (the columns of a DataFrame-fit model, say).
    inputs: tuple[Mapping[str, str], ...] | None = None
    # Runtime-specific settings, by the runtime's own names (xgboost's `nthread`, TF Serving's
    # `tensorflow_intra_op_parallelism`, ...): from the runtime's flags or settings.json.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # Requests run through the model after it loads and before it is ready, so that no user pays
    # for its first calls: a number of requests made from the model's own example (or zeros
    # shaped as its metadata says), or v2 request bodies (JSON objects), which must succeed.
    warmup: int | tuple[Mapping[str, Any], ...] = 0

    @property
    def max_batch_delay(self) -> float:
        """The batch delay in seconds."""
        return self.max_batch_delay_ms / 1000

    @property
    def batch_rows(self) -> int:
        """Rows a merged call may hold; 0 when requests are never merged."""
        return (self.max_batch_size or 0) if self.dynamic_batching else 0

    def default(self, **values: Any) -> ModelSettings:
        """These settings with the ones still open (None) set to `values`: how a runtime decides
        at load what depends on the model it loaded."""
        open_values = {k: v for k, v in values.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **open_values) if open_values else self

    def parameter(self, name: str, default: Any = None) -> Any:
        return self.parameters.get(name, default)


FIELDS = {f.name: f for f in dataclasses.fields(ModelSettings)}


def resolve(*layers: tuple[Mapping[str, Any], str]) -> ModelSettings:
    """The settings a model gets from `layers`, each (settings, where they come from), the first
    layer that gives a key winning. `parameters` merge key by key, in the same order. A key that
    is not a setting, or a value of the wrong type, is a ValueError naming where it came from."""
    values: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    for layer, where in reversed(layers):
        for key, value in layer.items():
            if value is None:
                continue
            if key == "parameters":
                parameters.update(_mapping(value, where))
            elif key == "max_batch_size" and type(value) is int and value == 0:  # no batching
                values["dynamic_batching"] = False
            else:
                values[key] = _checked(key, value, where)
                if key == "max_batch_size":
                    values["dynamic_batching"] = True
    return ModelSettings(**values, parameters=parameters)


def read_settings(folder: Path) -> dict[str, Any]:
    """A model folder's `settings.json`, or {} when there is none."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return settings


def _checked(key: str, value: Any, where: str) -> Any:
    if key not in FIELDS or key == "parameters":
        known = ", ".join(name for name in FIELDS)
        raise ValueError(f"{where}: unknown setting {key!r}; the settings are {known}")
    if key in ("max_batch_size", "max_queue_size", "threads"):
        if type(value) is not int or value < 0:  # noqa: E721 - bool is not a size
            raise ValueError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
    elif key in ("max_batch_delay_ms", "request_timeout_seconds"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or not math.isfinite(value):
            raise ValueError(f"{where}: {key} must be a number >= 0, got {value!r}")
        value = float(value)
    elif key == "outputs":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: outputs must be a list of output names, got {value!r}")
        value = tuple(value)
    elif key == "inputs":
        value = _inputs(value, where)
    elif key == "dynamic_batching" and not isinstance(value, bool):
        raise ValueError(f"{where}: dynamic_batching must be true or false, got {value!r}")
    elif key == "warmup":
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            value = tuple(value)
        elif type(value) is not int or value < 0:  # noqa: E721 - bool is not a count
            raise ValueError(f"{where}: warmup must be a number of requests or a list of v2 "
                             f"request bodies, got {value!r}")
    elif key == "runtime" and not isinstance(value, str):
        raise ValueError(f"{where}: runtime must be a runtime's name, got {value!r}")
    return value


def _inputs(value: Any, where: str) -> tuple[Mapping[str, str], ...]:
    example = '[{"name": "city", "datatype": "BYTES"}]'
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: inputs must be a list like {example}, got {value!r}")
    names = set()
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"name", "datatype"} \
                or not isinstance(item["name"], str) or not item["name"]:
            raise ValueError(f"{where}: each of inputs must be an object with a name and a "
                             f"datatype, like {example}; got {item!r}")
        if item["datatype"] not in TO_NUMPY:
            raise ValueError(f"{where}: input {item['name']!r} has datatype "
                             f"{item['datatype']!r}; the datatypes are {', '.join(TO_NUMPY)}")
        if item["name"] in names:
            raise ValueError(f"{where}: input {item['name']!r} is named twice in inputs")
        names.add(item["name"])
    return tuple(dict(item) for item in value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: parameters must be an object, got {value!r}")
    return value
