"""What a loaded model takes and returns: names, datatypes and shapes, read from an exported
program's graph or, for TorchScript, from `forward`'s arguments; and the request-time check of
an exported program's dynamic dimensions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InvalidInput
from modelserver.datatypes import TO_NUMPY
from modelserver.runtime.conform import Spec

FLOAT32 = np.dtype(np.float32)


@dataclass(slots=True)
class Dynamic:
    """A dynamic dimension of an exported program's input: its symbol and allowed sizes."""

    symbol: Any
    low: int
    high: int | None


@dataclass(slots=True)
class Interface:
    exported: bool  # an exported program, else TorchScript
    inputs: list[Spec]
    outputs: list[Spec]
    output_names: list[str] | None  # fixed names, else from each result
    # Whether the input specs are known (an exported program, or a signature file). TorchScript
    # without one takes any shape, and floating inputs in the model's floating dtype.
    declared: bool
    torch_dtypes: list[Any]  # per input: the dtype the model takes (None: as sent)
    dynamic: list[list[Dynamic | None]]  # per input, per dimension
    # TorchScript: forward's arguments after self, and its parameters' floating type.
    arguments: list[Any] = field(default_factory=list)
    float_dtype: np.dtype = FLOAT32
    float_datatype: str = "FP32"

    @property
    def batched(self) -> bool:
        """Every declared input and output leads with a dynamic dimension: rows can merge."""
        return (self.declared and bool(self.outputs)
                and all(s.shape and s.shape[0] is None for s in self.inputs + self.outputs))

    def check_dynamic(self, arrays: list[np.ndarray], model: str) -> None:
        """Exported programs fix the range of each dynamic dimension, and which must agree."""
        seen: dict[Any, tuple[str, int, int]] = {}
        for spec, array, dynamic in zip(self.inputs, arrays, self.dynamic):
            for axis, (dim, size) in enumerate(zip(dynamic, array.shape)):
                if dim is None:
                    continue
                if size < dim.low or (dim.high is not None and size > dim.high):
                    upto = "any" if dim.high is None else dim.high
                    raise InvalidInput(f"input '{spec.name}' of model '{model}': dimension "
                                       f"{axis} must be from {dim.low} to {upto}, got {size}")
                other = seen.setdefault(dim.symbol, (spec.name, axis, size))
                if other[2] != size:
                    raise InvalidInput(
                        f"inputs '{other[0]}' and '{spec.name}' of model '{model}' must "
                        f"agree in size: dimension {other[1]} of '{other[0]}' is {other[2]}, "
                        f"dimension {axis} of '{spec.name}' is {size}")


def program_interface(torch, program, path: Path) -> Interface:
    """An exported program's user inputs and outputs, from the values its graph records."""
    signature = program.graph_signature
    nodes = {node.name: node for node in program.graph.nodes}
    inputs, torch_dtypes, dynamic = [], [], []
    for name in signature.user_inputs:
        value = nodes[name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise RuntimeError(f"{path.name}: input '{name}' is a {type(value).__name__}, not "
                               "a tensor; only tensor inputs can be served")
        inputs.append(spec_of(torch, name, value))
        torch_dtypes.append(value.dtype)
        dynamic.append([_dynamic(dim, program.range_constraints) for dim in value.shape])
    output = next(node for node in program.graph.nodes if node.op == "output")
    values = [arg.meta.get("val") if hasattr(arg, "meta") else arg for arg in output.args[0]]
    user = [spec.kind.name == "USER_OUTPUT" for spec in signature.output_specs]
    values = [v for v, keep in zip(values, user) if keep]
    names = _output_names(program.call_spec.out_spec, len(values))
    outputs = [spec_of(torch, n, v) for n, v in zip(names, values) if isinstance(v, torch.Tensor)]
    return Interface(exported=True, inputs=inputs, outputs=outputs, output_names=names,
                     declared=True, torch_dtypes=torch_dtypes, dynamic=dynamic)


def script_interface(torch, module, path: Path) -> Interface:
    """TorchScript's `forward` names no types or shapes: `input-0`, `input-1`, ... in its
    floating type, and outputs named from what it returns."""
    arguments = module.forward.schema.arguments[1:]  # after self
    required = [a for a in arguments if not a.has_default_value()]
    for argument in required:
        if "Tensor" not in str(argument.type):
            raise RuntimeError(f"{path.name}: forward's argument '{argument.name}' is "
                               f"{argument.type}, not a tensor; only tensor inputs can be "
                               "served")
    floats = [t.dtype for t in [*module.parameters(), *module.buffers()]
              if t.is_floating_point()]
    torch_float = floats[0] if floats else torch.float32
    float_dtype = FLOAT32 if torch_float == torch.bfloat16 \
        else torch.empty(0, dtype=torch_float).numpy().dtype
    datatype = datatypes(torch).get(torch_float, "FP32")
    return Interface(
        exported=False,
        inputs=[Spec(f"input-{i}", datatype, float_dtype, None) for i in range(len(required))],
        outputs=[], output_names=None, declared=False,
        torch_dtypes=[None] * len(required), dynamic=[[] for _ in required],
        arguments=arguments, float_dtype=float_dtype, float_datatype=datatype)


_DATATYPES: dict[Any, str] = {}


def datatypes(torch) -> dict[Any, str]:
    """The Open Inference Protocol datatype of each torch dtype that has one."""
    if not _DATATYPES:
        _DATATYPES.update({
            torch.bool: "BOOL", torch.uint8: "UINT8", torch.int8: "INT8", torch.int16: "INT16",
            torch.int32: "INT32", torch.int64: "INT64", torch.float16: "FP16",
            torch.float32: "FP32", torch.float64: "FP64", torch.bfloat16: "BF16",
            torch.uint16: "UINT16", torch.uint32: "UINT32", torch.uint64: "UINT64",
        })
    return _DATATYPES


def spec_of(torch, name: str, value) -> Spec:
    datatype = datatypes(torch).get(value.dtype)
    if datatype is None:
        raise RuntimeError(f"'{name}' is a {value.dtype} tensor, which has no Open Inference "
                           "Protocol datatype")
    dtype = FLOAT32 if datatype == "BF16" else TO_NUMPY[datatype]
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
