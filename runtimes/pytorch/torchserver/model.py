"""A PyTorch model in a folder: a torch.export archive (`.pt2`) or TorchScript (`.pt`/`.pth`).

Inputs and outputs come from the exported program (names, datatypes, shapes with -1 for dynamic
dimensions), else from `signature.json` (or `.yaml`) beside the model, else they are `input-0`,
`input-1`, ... and `output-0`, ... in the order of `forward`'s arguments and results.

The parts, by role: files.py finds and reads the model file, interface.py says what it takes
and returns, signature.py applies a signature file, calls.py calls it; this class serves it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InferRequest, InvalidInput, Model, Tensor, TensorSpec
from modelserver.runtime.conform import datatype_of, listing, match_inputs

from .calls import program_call, to_numpy, to_tensor
from .files import (EXPORT_EXTENSIONS, MODEL_EXTENSIONS, find_model, first_line, import_torch,
                    load_exported_program, load_torchscript)
from .interface import Interface, program_interface, script_interface
from .signature import apply_signature, read_signature_file

log = logging.getLogger(__name__)

# Rows a merged call may hold when every declared input and output leads with a dynamic
# dimension (set by --max_batch_size or settings.json otherwise).
BATCH_ROWS = 32


class TorchModel(Model):
    platform = "pytorch"
    # torch computes without the GIL.
    predict_in_thread = True
    # A model's first forward costs many times the others: one on zeros before it is ready.
    defaults = {"warmup": 1}

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.interface = Interface(exported=False, inputs=[], outputs=[], output_names=None,
                                   declared=False, torch_dtypes=[], dynamic=[])
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
        path = find_model(self.model_dir)
        signature = read_signature_file(Path(self.model_dir))
        torch = import_torch(self.settings.threads)
        self._torch = torch
        if path.suffix in EXPORT_EXTENSIONS:
            self.platform = "pytorch_export"
            program = load_exported_program(torch, path)
            self.interface = program_interface(torch, program, path)
            self._call = program_call(torch, program)
        else:
            self.platform = "pytorch_torchscript"
            module = load_torchscript(torch, path)
            self.interface = script_interface(torch, module, path)
            self._call = lambda tensors: module(*tensors)
        if signature is not None:
            apply_signature(torch, self.interface, signature, path)
        self.settings = self.settings.default(
            max_batch_size=BATCH_ROWS if self.interface.batched else 0)
        log.info("loaded %s (%s): inputs %s; %d thread(s)", path, self.platform,
                 listing(self.interface.inputs), torch.get_num_threads())
        return True

    def example_request(self) -> InferRequest | None:
        """Zeros shaped as the inputs are declared, with the fewest rows a dynamic batch
        dimension allows; None when the inputs' sizes are not known."""
        if not self.interface.declared:
            return None
        tensors = []
        for spec, dynamic in zip(self.interface.inputs, self.interface.dynamic):
            if spec.shape is None or any(d is None for d in spec.shape[1:]):
                return None
            rows = max(1, dynamic[0].low) if dynamic and dynamic[0] is not None else 1
            shape = (rows, *spec.shape[1:]) if spec.shape and spec.shape[0] is None else spec.shape
            tensors.append(Tensor.from_numpy(spec.name, np.zeros(shape, dtype=spec.dtype)))
        return InferRequest(tensors)

    def unload(self) -> None:
        super().unload()
        self._call = None

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in self.interface.inputs]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in self.interface.outputs]

    # -- inference ------------------------------------------------------------------------------
    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        what = f"model '{self.name}'"
        interface = self.interface
        if interface.declared:
            given = match_inputs(request.inputs, interface.inputs, what)
            arrays = [given[spec.name] for spec in interface.inputs]
            interface.check_dynamic(arrays, self.name)
        else:
            arrays = self._loose_inputs(request, what)
        try:
            return self._forward(arrays)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            if interface.declared:
                raise
            # Nothing declared what the model takes, so its own complaint is the answer.
            raise InvalidInput(f"{what} cannot use this input: {_cause(exc)} (declare its "
                               "inputs in signature.json beside the model to have them "
                               "checked)") from None

    def _forward(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        tensors = [to_tensor(torch, array, dtype)
                   for array, dtype in zip(arrays, self.interface.torch_dtypes)]
        with self._lock, torch.inference_mode():
            result = self._call(tensors)
            names, values = self._flatten(result)
            return {name: to_numpy(torch, value) for name, value in zip(names, values)}

    def _flatten(self, result: Any) -> tuple[list[str], list[Any]]:
        if isinstance(result, dict):
            keys, values = [str(k) for k in result], list(result.values())
        elif isinstance(result, (tuple, list)):
            keys, values = None, self._torch.utils._pytree.tree_leaves(result)
        else:
            keys, values = None, [result]
        names = self.interface.output_names or keys or [f"output-{i}" for i in range(len(values))]
        if len(names) != len(values):
            raise RuntimeError(f"model '{self.name}' returned {len(values)} outputs, but "
                               f"{len(names)} are named ({', '.join(names)})")
        return names, values

    def _loose_inputs(self, request: InferRequest, what: str) -> list[np.ndarray]:
        """TorchScript without a signature file: the inputs by name, floats in its float type."""
        by_name = {tensor.name: tensor.data for tensor in request.inputs}
        names = [spec.name for spec in self.interface.inputs]
        unknown = [name for name in by_name if name not in names]
        if unknown or len(by_name) != len(names):
            raise InvalidInput(f"{what} takes input{'s' if len(names) != 1 else ''} "
                               f"{', '.join(repr(n) for n in names) or 'none'}; the request has "
                               f"{', '.join(repr(n) for n in by_name) or 'none'}")
        float_dtype = self.interface.float_dtype
        arrays = []
        for name in names:
            array = by_name[name]
            if array.dtype.kind not in "biuf":
                raise InvalidInput(f"input '{name}' of {what} must be numbers, got "
                                   f"{datatype_of(array)}")
            if array.dtype.kind == "f" and array.dtype != float_dtype:
                array = array.astype(float_dtype)
            arrays.append(array)
        return arrays


def _cause(exc: BaseException) -> str:
    """The line that says what went wrong: TorchScript puts it last, under a code excerpt."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        return lines[-1][:500]
    return first_line(exc)
