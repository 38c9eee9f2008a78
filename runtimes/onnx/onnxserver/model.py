"""An ONNX model in a folder (`model.onnx`, or Triton's `1/model.onnx`), served by ONNX Runtime
on the CPU: one InferenceSession, created at load and reused by every request.

Inputs and outputs are the graph's own: names, datatypes, and shapes with -1 for dynamic
dimensions; string tensors are BYTES. Outputs that are not tensors (sequences, maps) are left
out, except a ZipMap of class probabilities, which graph.py turns into a tensor."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InferRequest, InvalidInput, Model, Tensor, TensorSpec
from modelserver.runtime.conform import Spec, listing, match_inputs

from . import graph
from .session import (DATATYPES, INTRA_FLAG, find_model, holds_model, open_session,
                      ort_message, session_options, spec_of)

log = logging.getLogger(__name__)

# Rows a merged call may hold when every input and output leads with a dynamic dimension (set
# by --max_batch_size or settings.json otherwise).
BATCH_ROWS = 32


class OnnxModel(Model):
    platform = "onnxruntime_onnx"  # Triton's name for it
    # ONNX Runtime computes without the GIL.
    predict_in_thread = True
    flags = {
        INTRA_FLAG: {"type": int, "help": "ONNX Runtime's intra-op threads, as Triton's "
                                          "onnxruntime backend names them (default: the "
                                          "worker's share of the CPUs)"},
    }

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.input_specs: list[Spec] = []
        self.output_specs: list[Spec] = []
        self._session: Any = None
        self._invalid_argument: type[Exception] = RuntimeError
        self._outputs: list[str] = []  # what a request that names no outputs gets
        self._known_outputs: frozenset[str] = frozenset()
        self._columns: set[str] = set()  # inputs declared [-1, 1]: a column [n] is taken too
        self._text: list[str] = []  # string inputs, which ONNX Runtime takes as str
        self._shared: list[list[tuple[int, int]]] = []  # (input, axis) that share a dimension
        # One run at a time: each runs on all of the worker's intra-op threads, and two at once
        # would only fight over the same cores.
        self._lock = threading.Lock()

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        return holds_model(Path(folder))

    # -- loading --------------------------------------------------------------------------------
    def load(self) -> bool:
        path, version = find_model(self.model_dir)  # before importing onnxruntime: fails fast
        if version is not None:
            self.version = version
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        self._invalid_argument = InvalidArgument
        options = session_options(ort, self._threads())
        session = open_session(ort, str(path), options, path.name)
        if graph.needs_rewriting(session):
            session = open_session(ort, graph.rewritten(path), options, path.name)
        self._describe(session, path)
        self._session = session
        batched = bool(self.input_specs and self.output_specs) and all(
            s.shape and s.shape[0] is None for s in self.input_specs + self.output_specs)
        self.settings = self.settings.default(max_batch_size=BATCH_ROWS if batched else 0)
        self._warm_up()
        log.info("loaded %s: inputs %s; outputs %s; %d intra-op thread(s)", path,
                 listing(self.input_specs), listing(self.output_specs),
                 options.intra_op_num_threads)
        return True

    def _threads(self) -> int:
        threads = self.settings.parameter(INTRA_FLAG)
        if threads is None:
            return self.settings.threads
        if type(threads) is not int or threads < 0:  # noqa: E721 - bool is not a count
            raise ValueError(f"{INTRA_FLAG} must be a whole number >= 0 (0: ONNX Runtime's "
                             f"own choice), got {threads!r}")
        return threads

    def _describe(self, session, path: Path) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        # ONNX Runtime reports a scalar and a tensor of open rank alike, as []: ask the graph.
        unclear = [arg.name for arg in inputs + outputs if not arg.shape and arg.type in DATATYPES]
        ranks = graph.declared_ranks(path) if unclear else {}
        open_ranks = {name for name in unclear if ranks.get(name) is None}
        self.input_specs = []
        for arg in inputs:
            spec = spec_of(arg, arg.name in open_ranks)
            if spec is None:
                raise RuntimeError(f"{path.name}: input '{arg.name}' is {arg.type}, which the "
                                   "Open Inference Protocol cannot carry")
            self.input_specs.append(spec)
        self.output_specs = []
        for arg in outputs:
            spec = spec_of(arg, arg.name in open_ranks)
            if spec is None:
                log.warning("%s: output '%s' is %s, which the Open Inference Protocol cannot "
                            "carry: it is left out", path.name, arg.name, arg.type)
            else:
                self.output_specs.append(spec)
        if not self.output_specs:
            raise RuntimeError(f"{path.name} has no tensor output to serve")
        self._outputs = [spec.name for spec in self.output_specs]
        self._known_outputs = frozenset(self._outputs)
        self._columns = {s.name for s in self.input_specs if s.shape == (None, 1)}
        self._text = [s.name for s in self.input_specs if s.datatype == "BYTES"]
        self._shared = _shared_dimensions(inputs)

    def _warm_up(self) -> None:
        """One run on zeros (empty strings) where the input shapes are known, so the first
        request does not pay for the first run, and a model that cannot run says so now."""
        feeds = {}
        for spec in self.input_specs:
            if spec.shape is None:
                return
            shape = tuple(1 if d is None else d for d in spec.shape)
            feeds[spec.name] = (np.full(shape, "", dtype=object) if spec.datatype == "BYTES"
                                else np.zeros(shape, dtype=spec.dtype))
        try:
            self._session.run(self._outputs, feeds)
        except Exception as exc:  # zeros may be out of some model's domain: not an error
            log.debug("warm-up run failed: %s", ort_message(exc))

    def unload(self) -> None:
        super().unload()
        self._session = None

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in self.input_specs]

    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in self.output_specs]

    # -- inference ------------------------------------------------------------------------------
    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        what = f"model '{self.name}'"
        tensors = request.inputs
        if self._columns:
            tensors = [_as_column(t) if t.name in self._columns else t for t in tensors]
        feeds = match_inputs(tensors, self.input_specs, what)
        if self._shared:
            self._check_shared(feeds)
        for name in self._text:
            feeds[name] = _as_text(feeds[name], f"input '{name}' of {what}")
        names = self._fetch(request)
        try:
            with self._lock:
                values = self._session.run(names, feeds)
        except self._invalid_argument as exc:
            raise InvalidInput(f"{what} cannot use this input: {ort_message(exc)}") from None
        return dict(zip(names, values))

    def _fetch(self, request: InferRequest) -> list[str]:
        """The outputs to compute: those the request names, when the model has them all (else
        all, and the data plane answers which one it lacks)."""
        wanted = request.output_names
        if wanted is None or not self._known_outputs.issuperset(wanted):
            return self._outputs
        return list(dict.fromkeys(wanted))

    def _check_shared(self, feeds: dict[str, np.ndarray]) -> None:
        """Dimensions the graph names alike (a batch dimension "N", say) must agree."""
        names = [spec.name for spec in self.input_specs]
        for (first, axis), *others in self._shared:
            size = feeds[names[first]].shape[axis]
            for other, other_axis in others:
                other_size = feeds[names[other]].shape[other_axis]
                if other_size != size:
                    raise InvalidInput(
                        f"inputs '{names[first]}' and '{names[other]}' of model '{self.name}' "
                        f"must agree in size: dimension {axis} of '{names[first]}' is {size}, "
                        f"dimension {other_axis} of '{names[other]}' is {other_size}")


def _shared_dimensions(inputs) -> list[list[tuple[int, int]]]:
    """For each dimension name that several input dimensions carry, where it appears."""
    uses: dict[str, list[tuple[int, int]]] = {}
    for index, arg in enumerate(inputs):
        for axis, dim in enumerate(arg.shape):
            if isinstance(dim, str) and dim:
                uses.setdefault(dim, []).append((index, axis))
    return [places for places in uses.values() if len(places) > 1]


def _as_column(tensor: Tensor) -> Tensor:
    """A column given as a list ([n], as KServe v1 rows of named features give it) as [n, 1]."""
    if tensor.data.ndim != 1:
        return tensor
    data = tensor.data.reshape(-1, 1)
    return Tensor(tensor.name, tensor.datatype, list(data.shape), data, tensor.parameters)


def _as_text(array: np.ndarray, where: str) -> np.ndarray:
    """BYTES as str objects: ONNX Runtime would take bytes for their repr ("b'...'")."""
    out = np.empty(array.shape, dtype=object)
    try:
        out.reshape(-1)[:] = [item.decode() for item in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} must be UTF-8 text") from None
    return out
