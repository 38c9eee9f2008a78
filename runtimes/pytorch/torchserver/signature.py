"""`signature.json` (or `.yaml`) beside the model: names for an exported program's inputs and
outputs, and for TorchScript, which declares nothing, their names, datatypes and shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelserver.datatypes import TO_NUMPY
from modelserver.runtime.conform import Spec, listing

from .files import first_line
from .interface import Interface

SIGNATURE_FILES = ("signature.json", "signature.yaml", "signature.yml")


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
        raise ValueError(f"{path} cannot be read: {first_line(exc)}") from None
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


def apply_signature(torch, interface: Interface, signature: dict, path: Path) -> None:
    """Names (and for TorchScript, types) the interface's inputs and outputs as the signature
    file says; `path` is the model file, for messages."""
    inputs, outputs = signature.get("inputs"), signature.get("outputs")
    if inputs is not None:
        if interface.exported:
            _rename_inputs(interface, inputs, path)
        else:
            _declare_inputs(torch, interface, inputs, path)
    if outputs is not None:
        _name_outputs(interface, outputs, path)


def _rename_inputs(interface: Interface, inputs: list[dict], path: Path) -> None:
    """An exported program's inputs under the signature file's names; datatypes must match."""
    if len(inputs) != len(interface.inputs):
        raise ValueError(f"signature file lists {len(inputs)} inputs but {path.name} takes "
                         f"{len(interface.inputs)}: {listing(interface.inputs)}")
    specs = []
    for entry, known in zip(inputs, interface.inputs):
        if entry["datatype"] not in (None, known.datatype):
            raise ValueError(f"signature file says input '{entry['name']}' is "
                             f"{entry['datatype']}, but {path.name} takes {known.datatype}")
        shape = known.shape if entry["shape"] is None else entry["shape"]
        specs.append(Spec(entry["name"], known.datatype, known.dtype, shape))
    interface.inputs = specs


def _declare_inputs(torch, interface: Interface, inputs: list[dict], path: Path) -> None:
    """TorchScript's inputs as the signature file declares them, in forward's order."""
    arguments = interface.arguments
    required = sum(not a.has_default_value() for a in arguments)
    if not required <= len(inputs) <= len(arguments):
        raise ValueError(f"signature file lists {len(inputs)} inputs but {path.name}'s forward "
                         f"takes {required}"
                         + (f" to {len(arguments)}" if len(arguments) > required else ""))
    interface.inputs, interface.torch_dtypes = [], []
    for entry in inputs:
        datatype = entry["datatype"] or interface.float_datatype
        dtype = np.dtype(np.float32) if datatype == "BF16" else TO_NUMPY[datatype]
        interface.inputs.append(Spec(entry["name"], datatype, dtype, entry["shape"]))
        interface.torch_dtypes.append(torch.bfloat16 if datatype == "BF16" else None)
    interface.dynamic = [[] for _ in inputs]
    interface.declared = True


def _name_outputs(interface: Interface, outputs: list[dict], path: Path) -> None:
    names = [entry["name"] for entry in outputs]
    if interface.output_names is not None and len(names) != len(interface.output_names):
        raise ValueError(f"signature file lists {len(names)} outputs but {path.name} returns "
                         f"{len(interface.output_names)}")
    known = dict(enumerate(interface.outputs))
    interface.outputs = [
        Spec(entry["name"],
             entry["datatype"] or (known[i].datatype if i in known else "FP32"),
             TO_NUMPY.get(entry["datatype"], np.dtype(object)),
             entry["shape"] if entry["shape"] is not None
             else (known[i].shape if i in known else None))
        for i, entry in enumerate(outputs)
    ]
    interface.output_names = names
