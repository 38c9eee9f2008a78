"""A PyTorch model in a folder: a torch.export archive (`.pt2`) or TorchScript (`.pt`/`.pth`).

Inputs and outputs come from the exported program (names, datatypes, shapes with -1 for dynamic
dimensions), else from `signature.json` (or `.yaml`) beside the model, else they are `input-0`,
`input-1`, ... and `output-0`, ... in the order of `forward`'s arguments and results.

An exported program is called through its flat graph with the weights passed in, which skips
the pytree and guard work of `ExportedProgram.module()` (about 15 us a call against 60 us for a
small model): the runtime checks names, datatypes, shapes and dynamic-dimension ranges itself
before the call, and at load the fast call is checked against `module()` on the program's
example inputs (falling back to `module()` if they differ)."""

from __future__ import annotations

import json
import logging
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InferRequest, InvalidInput, Model, TensorSpec
from modelserver.datatypes import TO_NUMPY
from modelserver.runtime.files import find_model_file

from modelserver.runtime.conform import Spec, datatype_of, listing, match_inputs

log = logging.getLogger(__name__)

EXPORT_EXTENSIONS = (".pt2",)
SCRIPT_EXTENSIONS = (".pt", ".pth")
MODEL_EXTENSIONS = EXPORT_EXTENSIONS + SCRIPT_EXTENSIONS
MAR_HINT = (" (TorchServe .mar archives are not served: save the model with torch.export.save "
            "to model.pt2, or as TorchScript to model.pt)")
SIGNATURE_FILES = ("signature.json", "signature.yaml", "signature.yml")
# Rows a merged call may hold when every declared input and output leads with a dynamic
# dimension (set by --max_batch_size or settings.json otherwise).
BATCH_ROWS = 32


@dataclass(slots=True)
class Dynamic:
    """A dynamic dimension of an exported program's input: its symbol and allowed sizes."""

    symbol: Any
    low: int
    high: int | None


class TorchModel(Model):
    platform = "pytorch"
    # torch computes without the GIL.
    predict_in_thread = True

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.input_specs: list[Spec] = []
        self.output_specs: list[Spec] = []
        # Whether the input specs are known (an exported program, or signature.json). TorchScript
        # without one takes any shape, and floating inputs in the model's floating dtype.
        self.declared = False
        self.output_names: list[str] | None = None  # fixed names, else from each result
        self._float_dtype = np.dtype(np.float32)
        self._float_datatype = "FP32"
        self._script_arguments: list[Any] = []
        self._torch_dtypes: list[Any] = []  # per input: the dtype the model takes
        self._dynamic: list[list[Dynamic | None]] = []  # per input, per dimension
        self._call: Any = None  # list of input tensors -> the model's result
        self._torch: Any = None
        # One forward at a time: each runs on all of the worker's intra-op threads, and two at
        # once would only fight over the same cores.
        self._lock = threading.Lock()

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        try:
            return any(p.suffix in MODEL_EXTENSIONS and p.is_file() for p in Path(folder).iterdir())
        except OSError:
            return False

    # -- loading --------------------------------------------------------------------------------
    def load(self) -> bool:
        # Before importing torch: a missing file fails fast.
        hint = MAR_HINT if any(Path(self.model_dir).rglob("*.mar")) else ""
        path = find_model_file(self.model_dir, MODEL_EXTENSIONS, "PyTorch", hint=hint,
                               expected="one torch.export archive (.pt2) or TorchScript file "
                                        "(.pt, .pth)")
        signature = read_signature_file(Path(self.model_dir))
        torch = import_torch(self.settings.threads)
        self._torch = torch
        if path.suffix in EXPORT_EXTENSIONS:
            self.platform = "pytorch_export"
            self._load_export(torch, path)
        else:
            self.platform = "pytorch_torchscript"
            self._load_torchscript(torch, path)
        if signature is not None:
            self._apply_signature(signature, path)
        specs = self.input_specs + self.output_specs
        batched = (self.declared and bool(self.output_specs)
                   and all(s.shape and s.shape[0] is None for s in specs))
        self.settings = self.settings.default(max_batch_size=BATCH_ROWS if batched else 0)
        self._warm_up()
        log.info("loaded %s (%s): inputs %s; %d thread(s)", path, self.platform,
                 listing(self.input_specs), torch.get_num_threads())
        return True

    def _load_export(self, torch, path: Path) -> None:
        program = load_exported_program(torch, path)
        signature = program.graph_signature
        nodes = {node.name: node for node in program.graph.nodes}
        self.input_specs, self._torch_dtypes, self._dynamic = [], [], []
        for name in signature.user_inputs:
            value = nodes[name].meta.get("val")
            if not isinstance(value, torch.Tensor):
                raise RuntimeError(f"{path.name}: input '{name}' is a {type(value).__name__}, not "
                                   "a tensor; only tensor inputs can be served")
            self.input_specs.append(_spec_of(torch, name, value))
            self._torch_dtypes.append(value.dtype)
            self._dynamic.append([_dynamic(dim, program.range_constraints) for dim in value.shape])
        output = next(node for node in program.graph.nodes if node.op == "output")
        values = [arg.meta.get("val") if hasattr(arg, "meta") else arg
                  for arg in output.args[0]]
        user = [spec.kind.name == "USER_OUTPUT" for spec in signature.output_specs]
        values = [v for v, keep in zip(values, user) if keep]
        names = _output_names(program.call_spec.out_spec, len(values))
        self.output_names = names
        self.output_specs = [_spec_of(torch, n, v) for n, v in zip(names, values)
                             if isinstance(v, torch.Tensor)]
        self.declared = True
        self._call = _fast_call(torch, program) or _module_call(torch, program)

    def _load_torchscript(self, torch, path: Path) -> None:
        module = load_torchscript(torch, path)
        module.eval()
        arguments = module.forward.schema.arguments[1:]  # after self
        required = [a for a in arguments if not a.has_default_value()]
        for argument in required:
            if "Tensor" not in str(argument.type):
                raise RuntimeError(f"{path.name}: forward's argument '{argument.name}' is "
                                   f"{argument.type}, not a tensor; only tensor inputs can be "
                                   "served")
        self._script_arguments = arguments
        floats = [t.dtype for t in [*module.parameters(), *module.buffers()]
                  if t.is_floating_point()]
        torch_float = floats[0] if floats else torch.float32
        self._float_dtype = np.dtype(np.float32) if torch_float == torch.bfloat16 \
            else torch.empty(0, dtype=torch_float).numpy().dtype
        datatype = _datatypes(torch).get(torch_float, "FP32")
        self._float_datatype = datatype
        self.input_specs = [Spec(f"input-{i}", datatype, self._float_dtype, None)
                            for i in range(len(required))]
        self._torch_dtypes = [None] * len(required)
        self._dynamic = [[] for _ in required]
        self.output_specs, self.output_names, self.declared = [], None, False
        self._call = lambda tensors: module(*tensors)

    def _apply_signature(self, signature: dict, path: Path) -> None:
        """signature.json names (and for TorchScript, types) the inputs and outputs."""
        inputs, outputs = signature.get("inputs"), signature.get("outputs")
        if inputs is not None:
            if self.platform == "pytorch_export":
                if len(inputs) != len(self.input_specs):
                    raise ValueError(f"signature file lists {len(inputs)} inputs but "
                                     f"{path.name} takes {len(self.input_specs)}: "
                                     f"{listing(self.input_specs)}")
                specs = []
                for entry, known in zip(inputs, self.input_specs):
                    if entry["datatype"] not in (None, known.datatype):
                        raise ValueError(f"signature file says input '{entry['name']}' is "
                                         f"{entry['datatype']}, but {path.name} takes "
                                         f"{known.datatype}")
                    shape = known.shape if entry["shape"] is None else entry["shape"]
                    specs.append(Spec(entry["name"], known.datatype, known.dtype, shape))
                self.input_specs = specs
            else:
                arguments = self._script_arguments
                required = sum(not a.has_default_value() for a in arguments)
                if not required <= len(inputs) <= len(arguments):
                    raise ValueError(f"signature file lists {len(inputs)} inputs but "
                                     f"{path.name}'s forward takes {required}"
                                     + (f" to {len(arguments)}" if len(arguments) > required
                                        else ""))
                self.input_specs, self._torch_dtypes = [], []
                for entry in inputs:
                    datatype = entry["datatype"] or self._float_datatype
                    dtype = np.dtype(np.float32) if datatype == "BF16" else TO_NUMPY[datatype]
                    self.input_specs.append(Spec(entry["name"], datatype, dtype, entry["shape"]))
                    self._torch_dtypes.append(self._torch.bfloat16 if datatype == "BF16"
                                              else None)
                self._dynamic = [[] for _ in inputs]
                self.declared = True
        if outputs is not None:
            names = [entry["name"] for entry in outputs]
            if self.output_names is not None and len(names) != len(self.output_names):
                raise ValueError(f"signature file lists {len(names)} outputs but {path.name} "
                                 f"returns {len(self.output_names)}")
            known = {i: s for i, s in enumerate(self.output_specs)}
            self.output_specs = [
                Spec(entry["name"], entry["datatype"] or (known[i].datatype if i in known else
                                                          "FP32"),
                     TO_NUMPY.get(entry["datatype"], np.dtype(object)),
                     entry["shape"] if entry["shape"] is not None
                     else (known[i].shape if i in known else None))
                for i, entry in enumerate(outputs)
            ]
            self.output_names = names

    def _warm_up(self) -> None:
        """One call on zeros where the input shapes are known, so that the first request does
        not pay for the first run (and so that a model that cannot run at all says so now)."""
        if not self.declared:
            return
        arrays = []
        for spec, dynamic in zip(self.input_specs, self._dynamic):
            if spec.shape is None or any(d is None for d in spec.shape[1:]):
                return
            rows = max(1, dynamic[0].low) if dynamic and dynamic[0] is not None else 1
            shape = (rows, *spec.shape[1:]) if spec.shape and spec.shape[0] is None else spec.shape
            arrays.append(np.zeros(shape, dtype=spec.dtype))
        try:
            self._forward(arrays)
        except Exception as exc:  # zeros may be out of some model's domain: not an error
            log.debug("warm-up call failed: %s", _first_line(exc))

    def unload(self) -> None:
        super().unload()
        self._call = None

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in self.input_specs]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in self.output_specs]

    # -- inference ------------------------------------------------------------------------------
    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        what = f"model '{self.name}'"
        if self.declared:
            given = match_inputs(request.inputs, self.input_specs, what)
            arrays = [given[spec.name] for spec in self.input_specs]
            self._check_dynamic(arrays)
        else:
            arrays = self._loose_inputs(request, what)
        try:
            return self._forward(arrays)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            if self.declared:
                raise
            # Nothing declared what the model takes, so its own complaint is the answer.
            raise InvalidInput(f"{what} cannot use this input: {_cause(exc)} (declare its "
                               "inputs in signature.json beside the model to have them "
                               "checked)") from None

    def _forward(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        tensors = [_tensor(torch, array, dtype) for array, dtype in zip(arrays, self._torch_dtypes)]
        with self._lock, torch.inference_mode():
            result = self._call(tensors)
            names, values = self._flatten(result)
            return {name: _numpy(torch, value) for name, value in zip(names, values)}

    def _flatten(self, result: Any) -> tuple[list[str], list[Any]]:
        if isinstance(result, dict):
            keys, values = [str(k) for k in result], list(result.values())
        elif isinstance(result, (tuple, list)):
            keys, values = None, self._torch.utils._pytree.tree_leaves(result)
        else:
            keys, values = None, [result]
        names = self.output_names or keys or [f"output-{i}" for i in range(len(values))]
        if len(names) != len(values):
            raise RuntimeError(f"model '{self.name}' returned {len(values)} outputs, but "
                               f"{len(names)} are named ({', '.join(names)})")
        return names, values

    def _check_dynamic(self, arrays: list[np.ndarray]) -> None:
        """Exported programs fix the range of each dynamic dimension, and which must agree."""
        seen: dict[Any, tuple[str, int, int]] = {}
        for spec, array, dynamic in zip(self.input_specs, arrays, self._dynamic):
            for axis, (dim, size) in enumerate(zip(dynamic, array.shape)):
                if dim is None:
                    continue
                if size < dim.low or (dim.high is not None and size > dim.high):
                    upto = "any" if dim.high is None else dim.high
                    raise InvalidInput(f"input '{spec.name}' of model '{self.name}': dimension "
                                       f"{axis} must be from {dim.low} to {upto}, got {size}")
                other = seen.setdefault(dim.symbol, (spec.name, axis, size))
                if other[2] != size:
                    raise InvalidInput(
                        f"inputs '{other[0]}' and '{spec.name}' of model '{self.name}' must "
                        f"agree in size: dimension {other[1]} of '{other[0]}' is {other[2]}, "
                        f"dimension {axis} of '{spec.name}' is {size}")

    def _loose_inputs(self, request: InferRequest, what: str) -> list[np.ndarray]:
        by_name = {tensor.name: tensor.data for tensor in request.inputs}
        names = [spec.name for spec in self.input_specs]
        unknown = [name for name in by_name if name not in names]
        if unknown or len(by_name) != len(names):
            raise InvalidInput(f"{what} takes input{'s' if len(names) != 1 else ''} "
                               f"{', '.join(repr(n) for n in names) or 'none'}; the request has "
                               f"{', '.join(repr(n) for n in by_name) or 'none'}")
        arrays = []
        for name in names:
            array = by_name[name]
            if array.dtype.kind not in "biuf":
                raise InvalidInput(f"input '{name}' of {what} must be numbers, got "
                                   f"{datatype_of(array)}")
            if array.dtype.kind == "f" and array.dtype != self._float_dtype:
                array = array.astype(self._float_dtype)
            arrays.append(array)
        return arrays


# -- finding the model --------------------------------------------------------------------------
def read_signature_file(folder: Path) -> dict | None:
    """signature.json (or .yaml): {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]},
    the format of v2 model metadata; datatype and shape are optional."""
    found = [folder / name for name in SIGNATURE_FILES if (folder / name).is_file()]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"several signature files in {folder}: "
                         f"{', '.join(p.name for p in found)}; keep one")
    path = found[0]
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            try:
                import yaml
            except ImportError:
                raise ValueError("reading it needs PyYAML (pip install 'torchserver[yaml]'), "
                                 "or write it as signature.json") from None
            data = yaml.safe_load(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read: {_first_line(exc)}") from None
    if not isinstance(data, dict) or not set(data) <= {"inputs", "outputs"}:
        raise ValueError(f"{path} must be an object with 'inputs' and/or 'outputs'")
    return {key: _entries(path, key, data[key]) for key in ("inputs", "outputs") if key in data}


def _entries(path: Path, key: str, entries: Any) -> list[dict]:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: '{key}' must be a non-empty list")
    out, names = [], set()
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not entry["name"] or entry["name"] in names:
            raise ValueError(f"{path}: each of '{key}' needs a 'name', unique")
        names.add(entry["name"])
        datatype, shape = entry.get("datatype"), entry.get("shape")
        if datatype is not None and (datatype not in TO_NUMPY and datatype != "BF16"
                                     or (datatype == "BYTES" and key == "inputs")):
            raise ValueError(f"{path}: '{entry['name']}' has datatype {datatype!r}; use one of "
                             f"{', '.join(t for t in TO_NUMPY if t != 'BYTES')}, BF16")
        if shape is not None and (not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)):
            raise ValueError(f"{path}: the shape of '{entry['name']}' must be a list of sizes, "
                             "-1 for any")
        out.append({"name": entry["name"], "datatype": datatype,
                    "shape": None if shape is None else tuple(None if d == -1 else d
                                                              for d in shape)})
    return out


# -- loading ------------------------------------------------------------------------------------
_threads = threading.Lock()
_threads_set = False


def import_torch(threads: int):
    """torch, with its intra-op threads sized to this worker's share of the CPUs (once)."""
    global _threads_set
    import torch

    with _threads:
        if not _threads_set:
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:
                pass  # inter-op work already ran in this process
            _threads_set = True
    return torch


def _archive_info(path: Path) -> dict:
    """The exported program's own record: torch_version, schema_version."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist()
                         if n.split("/")[-2:] == ["models", "model.json"]), None)
            if name is None:
                return {}
            data = json.loads(archive.read(name))
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return {key: data.get(key) for key in ("torch_version", "schema_version")}


def load_exported_program(torch, path: Path):
    info = _archive_info(path)
    made_by = info.get("torch_version")
    version = info.get("schema_version") or {}
    try:
        from torch._export.serde.schema import SCHEMA_VERSION
    except ImportError:  # pragma: no cover - moved in a later torch
        SCHEMA_VERSION = None
    if SCHEMA_VERSION and version.get("major") not in (None, SCHEMA_VERSION[0]):
        raise RuntimeError(
            f"{path.name} was exported by torch {made_by or 'of another version'} in export "
            f"format {version.get('major')}.{version.get('minor')}; this server runs torch "
            f"{torch.__version__}, which reads format {SCHEMA_VERSION[0]}.x: export the model "
            f"again with torch {torch.__version__.split('+')[0]}, or serve it with the torch "
            "version that exported it")
    # torch.export.load logs the real failure (with a traceback) and raises a generic error:
    # keep the log record and report its message instead.
    captured: list[logging.LogRecord] = []
    handler = _Capture(captured)
    logger = logging.getLogger("torch.export")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        cause = next((r.exc_info[1] for r in captured if r.exc_info and r.exc_info[1]), exc)
        note = ""
        if made_by and made_by != torch.__version__:
            note = f" (it was exported by torch {made_by}; this server runs {torch.__version__})"
        raise RuntimeError(f"could not load {path.name}: {_first_line(cause)}{note}") from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class _Capture(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def load_torchscript(torch, path: Path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        names = None
    if names is not None and not any(n.endswith("/constants.pkl") or n == "constants.pkl"
                                     for n in names):
        if any(n.endswith("data.pkl") for n in names):
            raise RuntimeError(
                f"{path.name} is not TorchScript but a torch.save() file (a state_dict or a "
                "pickled module), which needs the model's Python code to load: save the model "
                "with torch.export.save(torch.export.export(model, example_inputs), "
                "'model.pt2'), or torch.jit.script(model).save('model.pt')")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        message = _first_line(exc).split("] . ")[-1]  # drop c10's "[enforce fail at ...]"
        raise RuntimeError(f"could not load {path.name} as TorchScript with torch "
                           f"{torch.__version__}: {message}") from None


_DATATYPES: dict[Any, str] = {}


def _datatypes(torch) -> dict[Any, str]:
    if not _DATATYPES:
        _DATATYPES.update({
            torch.bool: "BOOL", torch.uint8: "UINT8", torch.int8: "INT8", torch.int16: "INT16",
            torch.int32: "INT32", torch.int64: "INT64", torch.float16: "FP16",
            torch.float32: "FP32", torch.float64: "FP64", torch.bfloat16: "BF16",
            torch.uint16: "UINT16", torch.uint32: "UINT32", torch.uint64: "UINT64",
        })
    return _DATATYPES


def _spec_of(torch, name: str, value) -> Spec:
    datatype = _datatypes(torch).get(value.dtype)
    if datatype is None:
        raise RuntimeError(f"'{name}' is a {value.dtype} tensor, which has no Open Inference "
                           "Protocol datatype")
    dtype = np.dtype(np.float32) if datatype == "BF16" else TO_NUMPY[datatype]
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    return Spec(name, datatype, dtype, shape)


def _dynamic(dim, constraints) -> Dynamic | None:
    if isinstance(dim, int):
        return None
    expr = dim.node.expr
    if not getattr(expr, "is_Symbol", False):
        return None  # derived from another dimension (2 * s0, say): checked by that one
    bounds = constraints.get(expr)
    if bounds is None:
        return Dynamic(expr, 0, None)
    low = int(bounds.lower) if getattr(bounds.lower, "is_Integer", False) else 0
    high = int(bounds.upper) if getattr(bounds.upper, "is_Integer", False) else None
    return Dynamic(expr, low, high)


def _output_names(out_spec, count: int) -> list[str]:
    """A dict's keys when the program returns a flat dict, else output-0, output-1, ..."""
    if out_spec is None or out_spec.type is not dict or out_spec.num_leaves != count:
        return [f"output-{i}" for i in range(count)]
    children = out_spec.children() if callable(getattr(out_spec, "children", None)) \
        else out_spec.children_specs
    if all(child.num_leaves == 1 and child.num_children == 0 for child in children):
        return [str(key) for key in out_spec.context]
    return [f"output-{i}" for i in range(count)]


def _fast_call(torch, program):
    """The program's flat graph with its weights bound, if it is a plain function of its inputs
    and agrees with module() on the example inputs."""
    signature = program.graph_signature
    lifted, user = [], 0
    for spec in signature.input_specs:
        kind = spec.kind.name
        if kind == "USER_INPUT":
            user += 1
            continue
        if user or kind not in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            return None  # weights after user inputs, tokens, custom objects: use module()
        source = program.state_dict if spec.target in program.state_dict else program.constants
        if spec.target not in source:
            return None
        lifted.append(source[spec.target])
    if any(spec.kind.name != "USER_OUTPUT" for spec in signature.output_specs):
        return None  # it mutates buffers or inputs: module() keeps that state
    graph = program.graph_module

    def call(tensors):
        return list(graph(*lifted, *tensors))

    example = program.example_inputs
    if example is not None:
        leaves = torch.utils._pytree.tree_leaves(example)
        try:
            with torch.inference_mode():
                fast = call(leaves)
                slow = _module_call(torch, program)(leaves)
            same = len(fast) == len(slow) and all(
                torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                for a, b in zip(fast, slow))
        except Exception as exc:
            log.info("the flat graph failed on the example inputs (%s): using module()",
                     _first_line(exc))
            return None
        if not same:
            log.info("the flat graph disagrees with module() on the example inputs: using it")
            return None
    return call


def _module_call(torch, program):
    module = program.module()
    in_spec = program.call_spec.in_spec
    pytree = torch.utils._pytree

    def call(tensors):
        args, kwargs = pytree.tree_unflatten(list(tensors), in_spec)
        return pytree.tree_leaves(module(*args, **kwargs))

    return call


def _tensor(torch, array: np.ndarray, dtype) -> Any:
    if not array.flags.writeable:  # torch.from_numpy wants memory it may write
        array = array.copy()
    tensor = torch.from_numpy(array)
    return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)


def _numpy(torch, value) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.cpu().numpy()


def _cause(exc: BaseException) -> str:
    """The line that says what went wrong: TorchScript puts it last, under a code excerpt."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        return lines[-1][:500]
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
