"""Calling a loaded model on a list of input tensors, and tensors to and from numpy.

An exported program is called through its flat graph with the weights passed in, which skips
the pytree and guard work of `ExportedProgram.module()` (about 15 us a call against 60 us for a
small model): the runtime checks names, datatypes, shapes and dynamic-dimension ranges itself
before the call (interface.py), and at load the fast call is checked against `module()` on the
program's example inputs (falling back to `module()` if they differ)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .files import first_line

log = logging.getLogger(__name__)


def program_call(torch, program):
    """The fastest correct way to call an exported program: list of tensors -> list."""
    return fast_call(torch, program) or module_call(torch, program)


def fast_call(torch, program):
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
                slow = module_call(torch, program)(leaves)
            same = len(fast) == len(slow) and all(
                torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                for a, b in zip(fast, slow))
        except Exception as exc:
            log.info("the flat graph failed on the example inputs (%s): using module()",
                     first_line(exc))
            return None
        if not same:
            log.info("the flat graph disagrees with module() on the example inputs: using it")
            return None
    return call


def module_call(torch, program):
    module = program.module()
    in_spec = program.call_spec.in_spec
    pytree = torch.utils._pytree

    def call(tensors):
        args, kwargs = pytree.tree_unflatten(list(tensors), in_spec)
        return pytree.tree_leaves(module(*args, **kwargs))

    return call


def to_tensor(torch, array: np.ndarray, dtype) -> Any:
    """A tensor sharing the array's memory where it can, in `dtype` if one is given."""
    if not array.flags.writeable:  # torch.from_numpy wants memory it may write
        array = array.copy()
    tensor = torch.from_numpy(array)
    return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)


def to_numpy(torch, value) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.cpu().numpy()
