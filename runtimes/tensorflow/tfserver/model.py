"""A TensorFlow model in a folder: a SavedModel (as TensorFlow Serving lays it out, optionally in
numbered version folders) or a Keras file, served through its signature functions.

A signature's concrete function is the fastest way into a TensorFlow graph from Python (about
0.2-0.4 ms for a small model, against 60-95 ms for Keras `model.predict`, which sets up a data
pipeline per call). Keras files are exported to a SavedModel at load time, so they are served
exactly as TensorFlow Serving would serve `model.export()`'s output."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserver import InferRequest, InvalidInput, Model, RequestedOutput, TensorSpec
from modelserver.runtime.conform import Spec, match_inputs
from modelserver.runtime.versions import SavedWith

from . import tfserving

log = logging.getLogger(__name__)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
KERAS_EXTENSIONS = (".keras", ".h5", ".hdf5")
DEFAULT_SIGNATURE = "serving_default"
# Rows a merged call may hold when the default signature is batched (every input and output
# leads with a free dimension, as TensorFlow Serving's batching assumes).
BATCH_ROWS = 32
# TensorFlow Serving's thread flags, which a model's settings.json may also give as parameters.
INTRA_FLAG, INTER_FLAG = "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"


@dataclass(slots=True)
class Signature:
    name: str
    function: Any  # a ConcreteFunction taking keyword tensors, returning a dict of tensors
    inputs: list[Spec]
    outputs: list[Spec]

    @property
    def batched(self) -> bool:
        return all(s.shape and s.shape[0] is None for s in self.inputs + self.outputs)


@dataclass(frozen=True, slots=True)
class Found:
    path: Path
    kind: str  # "savedmodel" or "keras"
    version: str | None  # the version folder it is in, if any


class TFModel(Model):
    platform = "tensorflow_savedmodel"
    # Signature functions run in C++ without the GIL.
    predict_in_thread = True
    # TensorFlow's first call of a signature costs about 100 ms more than the others: one call
    # on zeros shaped as its inputs before the model is ready.
    defaults = {"warmup": 1}
    flags = {
        INTRA_FLAG: {"type": int, "help": "TensorFlow's intra-op threads (default: the "
                                          "worker's share of the CPUs)"},
        INTER_FLAG: {"type": int, "help": "TensorFlow's inter-op threads (default: 2)"},
    }

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.signatures: dict[str, Signature] = {}
        self.default: Signature | None = None
        # The SignatureDefs as saved, by name: TF Serving's metadata, and their method names
        # (predict, classify, regress).
        self.signature_defs: dict[str, Any] = {}
        self._loaded: Any = None  # keeps the SavedModel's variables alive
        self._lock: threading.Lock | None = None

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        try:
            return bool(_candidates(Path(folder)) or _versions(Path(folder)))
        except OSError:
            return False

    # -- loading --------------------------------------------------------------------------------
    def load(self) -> bool:
        found = find_model(self.model_dir)  # before importing TensorFlow: a missing file fails fast
        tf = import_tensorflow(self.settings)
        if found.version is not None:
            self.version = found.version
        if found.kind == "keras":
            self.platform = "tensorflow_keras"
            loaded, self.signature_defs = _load_keras(tf, found.path)
        else:
            loaded = _load_saved_model(tf, found.path)
            self.signature_defs = _signature_defs(found.path)
        self.signatures = _signatures(tf, loaded, found.path)
        self.default = self.signatures[_default_signature(self.signatures, found.path)]
        self._loaded = loaded
        if tf.config.threading.get_inter_op_parallelism_threads() == 1:
            # One inter-op thread cannot run two graphs at once: take requests one at a time.
            self._lock = threading.Lock()
        self.settings = self.settings.default(
            max_batch_size=BATCH_ROWS if self.default.batched else 0)
        log.info("loaded %s (%s): signatures %s, serving '%s' by default; %d intra-op and %d "
                 "inter-op thread(s)", found.path, found.kind, ", ".join(self.signatures),
                 self.default.name, tf.config.threading.get_intra_op_parallelism_threads(),
                 tf.config.threading.get_inter_op_parallelism_threads())
        return True

    def unload(self) -> None:
        super().unload()
        self.signatures, self.default, self._loaded = {}, None, None
        self.signature_defs = {}

    # -- metadata -------------------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        specs = self.default.inputs if self.default else []
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in specs]

    def outputs(self) -> list[TensorSpec]:
        specs = self.default.outputs if self.default else []
        return [TensorSpec(s.name, s.datatype, s.v2_shape) for s in specs]

    # -- inference ------------------------------------------------------------------------------
    def signature(self, name: Any = None) -> Signature:
        if name is None:
            return self.default
        signature = self.signatures.get(name) if isinstance(name, str) else None
        if signature is None:
            raise InvalidInput(f"model '{self.name}' has no signature {name!r}; it has "
                               f"{', '.join(repr(s) for s in self.signatures)}")
        return signature

    def predict(self, request: InferRequest) -> dict[str, np.ndarray]:
        params = request.parameters
        signature = self.signature(params.get("signature_name") if params else None)
        what = f"signature '{signature.name}' of model '{self.name}'"
        feeds = match_inputs(request.inputs, signature.inputs, what)
        try:
            if self._lock is None:
                result = signature.function(**feeds)
            else:
                with self._lock:
                    result = signature.function(**feeds)
        except Exception as exc:
            if type(exc).__name__ == "InvalidArgumentError":  # TF's word for input it can't use
                raise InvalidInput(f"{what} cannot use this input: {_first_line(exc)}") from None
            raise
        return {spec.name: _numpy(result[spec.name]) for spec in signature.outputs}

    # -- v1: TensorFlow Serving's REST API ------------------------------------------------------
    def decode_v1(self, body: Any, verb: str = "predict") -> InferRequest:
        if not isinstance(body, dict):
            raise InvalidInput("a request must be a JSON object")
        signature = self.signature(body.get("signature_name"))
        what = f"signature '{signature.name}' of model '{self.name}'"
        if verb == "predict":
            inputs = tfserving.decode(body, signature.inputs, what)
            wanted = self.settings.outputs
        else:  # classify, regress: tf.Example protos into the signature's one string input
            self._check_method(signature, verb)
            inputs = [tfserving.examples(body, signature.inputs[0].name)]
            wanted = None
        # Only another signature needs saying: requests with parameters are never batched.
        params = None if signature is self.default else {"signature_name": signature.name}
        outputs = None if wanted is None else [RequestedOutput(n) for n in wanted]
        return InferRequest(inputs=inputs, outputs=outputs, parameters=params)

    def encode_v1(self, response, body: Any, verb: str = "predict") -> dict:
        if verb == "classify":
            return tfserving.classifications(response.outputs)
        if verb == "regress":
            return tfserving.regressions(response.outputs)
        return tfserving.encode(response.outputs, columnar=not tfserving.row_format(body))

    def _check_method(self, signature: Signature, verb: str) -> None:
        """:classify and :regress take signatures saved for them, as TF Serving's do."""
        saved = self.signature_defs.get(signature.name)
        method = saved.method_name if saved is not None else ""
        if method != tfserving.METHODS[verb] or len(signature.inputs) != 1:
            raise InvalidInput(
                f"signature '{signature.name}' of model '{self.name}' is not a {verb} signature "
                f"(its method is {method or 'unknown'!r}); name one with 'signature_name'"
                + _listing(self.signature_defs, tfserving.METHODS[verb]))

    def v1_status(self) -> dict:
        """TF Serving's model status beside KServe's: the one version served, available."""
        return {"model_version_status": [{"version": self.version, "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    def v1_metadata(self) -> dict:
        return tfserving.metadata(self.name, self.version, self.signature_defs)


# -- finding the model --------------------------------------------------------------------------
def _candidates(folder: Path) -> list[Path]:
    """The models right in `folder`: itself if it is a SavedModel, and its Keras files."""
    found = [folder] if any((folder / f).is_file() for f in SAVED_MODEL_FILES) else []
    return found + sorted(p for p in folder.iterdir()
                          if p.suffix in KERAS_EXTENSIONS and p.is_file())


def _versions(folder: Path) -> list[Path]:
    """TensorFlow Serving's layout: numbered folders holding a model, the highest served."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()
                   and _candidates(p)), key=lambda p: int(p.name))


def find_model(model_dir: str | os.PathLike) -> Found:
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model directory {folder} does not exist")
    here, versions = _candidates(folder), _versions(folder)
    if here and versions:
        raise ValueError(
            f"{folder} holds both a model ({', '.join(_name(p, folder) for p in here)}) and "
            f"version folders ({', '.join(p.name for p in versions)}); keep one or the other")
    version = None
    if versions:
        newest = versions[-1]
        here, version = _candidates(newest), newest.name
        folder = newest
    if not here:
        present = ", ".join(sorted(p.name + ("/" if p.is_dir() else "")
                                   for p in folder.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"no TensorFlow model in {folder}: expected a SavedModel (saved_model.pb with "
            f"variables/), in the folder or in numbered version folders (1/, 2/, ...), or one "
            f"Keras file ({', '.join(KERAS_EXTENSIONS)}); found {present}")
    if len(here) > 1:
        raise ValueError(f"several models in {folder}: {', '.join(_name(p, folder) for p in here)}"
                         "; keep exactly one")
    path = here[0]
    return Found(path, "savedmodel" if path.is_dir() else "keras", version)


def _name(path: Path, folder: Path) -> str:
    return "a SavedModel (saved_model.pb)" if path == folder else path.name


# -- loading ------------------------------------------------------------------------------------
_threads_lock = threading.Lock()


def import_tensorflow(settings):
    """TensorFlow, with its thread pools sized for this worker (once per process): TF Serving's
    flags (or settings.json parameters) if given, else the worker's share of the CPUs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no INFO banners from the C++ side
    import tensorflow as tf

    with _threads_lock:
        intra = settings.parameter(INTRA_FLAG) or settings.threads
        # More than one inter-op thread: with one, concurrent calls would queue behind each other
        # (TF Serving's own default is the core count; a small fixed pool avoids oversubscribing
        # a worker that has a share of the CPUs).
        inter = settings.parameter(INTER_FLAG) or 2
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:
            pass  # already running: an earlier model in this process has set them
    return tf


def _listing(defs: dict[str, Any], method: str) -> str:
    names = [name for name, saved in defs.items() if saved.method_name == method]
    return f" ({', '.join(names)})" if names else "; the model has none"


def _read_saved_model(path: Path):
    """The SavedModel protocol buffer in `path` (saved_model.pb or .pbtxt)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved)
    return saved


def _signature_defs(path: Path) -> dict[str, Any]:
    """The SignatureDefs of the graph TensorFlow serves (tagged `serve`), by name."""
    graphs = _read_saved_model(path).meta_graphs
    serving = [g for g in graphs if "serve" in g.meta_info_def.tags] or graphs[:1]
    return dict(serving[0].signature_def) if serving else {}


def _load_saved_model(tf, path: Path):
    saved_with = SavedWith("TensorFlow", __name__, _saved_version(path), tf.__version__)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise RuntimeError(f"could not load the SavedModel in {path}: {_first_line(exc)}"
                           f"{saved_with.advice()}") from None
    saved_with.log_difference(str(path))
    return loaded


def _saved_version(path: Path) -> str | None:
    """The TensorFlow that wrote the SavedModel, as it recorded itself."""
    try:
        return _read_saved_model(path).meta_graphs[0].meta_info_def.tensorflow_version or None
    except Exception:
        return None


def _load_keras(tf, path: Path):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"KERAS_BACKEND is {keras.backend.backend()!r}; tfserver serves Keras "
                           "models with the TensorFlow backend: unset it")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise RuntimeError(f"could not load {path.name}: {_first_line(exc)}"
                           f"{_keras_saved_with(keras, path)}") from None
    # Exported and reloaded as TF Serving would load `model.export()`: the same signature
    # (inputs named after the model's Input layers, outputs after its output layers or
    # output_0, ...) and the same fast call, without Keras on the request path.
    quiet = logging.getLogger("tensorflow")  # "Assets written to <temporary folder>"
    level = quiet.level
    with tempfile.TemporaryDirectory(prefix="tfserver-keras-") as folder:
        try:
            quiet.setLevel(max(level, logging.WARNING))
            model.export(folder, format="tf_saved_model", verbose=False)
        except Exception as exc:
            raise RuntimeError(f"could not export {path.name} to a serving signature: "
                               f"{_first_line(exc)}") from None
        finally:
            quiet.setLevel(level)
        del model
        return tf.saved_model.load(folder), _signature_defs(Path(folder))


def _keras_saved_with(keras, path: Path) -> str:
    version = None
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version")
        else:
            import h5py

            with h5py.File(path, "r") as h5:
                version = h5.attrs.get("keras_version")
                version = version.decode() if isinstance(version, bytes) else version
    except Exception:
        return ""
    if not version or version == keras.__version__:
        return ""
    return (f" (it was saved with Keras {version}; this server has Keras {keras.__version__}: "
            "save it again with this version, or export a SavedModel with model.export())")


def _signatures(tf, loaded, path: Path) -> dict[str, Signature]:
    signatures = {}
    for name, function in getattr(loaded, "signatures", {}).items():
        _, kwargs = function.structured_input_signature
        outputs = function.structured_outputs
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        # By name, as TF Serving's SignatureDef maps list them.
        signatures[name] = Signature(
            name, function,
            [_spec(tf, key, kwargs[key]) for key in sorted(kwargs)],
            [_spec(tf, key, outputs[key]) for key in sorted(outputs)],
        )
    if not signatures:
        raise RuntimeError(f"the SavedModel in {path} has no signatures: save it with "
                           "signatures={'serving_default': ...} (Keras: model.export())")
    return signatures


def _default_signature(signatures: dict[str, Signature], path: Path) -> str:
    if DEFAULT_SIGNATURE in signatures:
        return DEFAULT_SIGNATURE
    name = sorted(signatures)[0]
    if len(signatures) > 1:
        log.warning("%s has no '%s' signature; requests that name none get '%s'", path,
                    DEFAULT_SIGNATURE, name)
    return name


def _spec(tf, name: str, spec) -> Spec:
    dtype = spec.dtype
    if dtype == tf.string:
        datatype, np_dtype = "BYTES", np.dtype(object)
    else:
        np_dtype = np.dtype(dtype.as_numpy_dtype)
        datatype = {"bfloat16": "BF16"}.get(dtype.name) or _datatype(np_dtype, dtype.name)
    shape = spec.shape
    dims = None if shape.rank is None else tuple(shape.as_list())
    return Spec(name, datatype, np_dtype, dims)


def _datatype(np_dtype: np.dtype, fallback: str) -> str:
    from modelserver.datatypes import from_numpy

    try:
        return from_numpy(np_dtype)
    except ValueError:
        return fallback.upper()


def _numpy(tensor) -> np.ndarray:
    array = tensor.numpy()
    if array.dtype.kind == "V":  # bfloat16 has no place in JSON or numpy's own types
        return array.astype(np.float32)
    return array


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
