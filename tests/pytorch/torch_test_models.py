"""PyTorch models for the tests, made in temporary folders."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch


class TwoInputs(torch.nn.Module):
    """Rows of features and one id per row: ids must have as many rows as x."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, ids: torch.Tensor):
        out = self.linear(x)
        return out.sum(dim=1) + ids, out * 2


class Embedder(torch.nn.Module):
    """Token ids (int64) and weights (float): TorchScript that only a signature file describes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embedding = torch.nn.Embedding(16, 3)

    def forward(self, tokens: torch.Tensor, weights: torch.Tensor):
        vectors = self.embedding(tokens) * weights.unsqueeze(-1)
        return vectors.sum(dim=1), tokens.argmax(dim=1)


class Digits(torch.nn.Module):
    """28x28 images to a digit, as KServe's MNIST sample model takes them ([N, 28, 28])."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.linear = torch.nn.Linear(28 * 28, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1)).argmax(dim=1)


def export_digits(path: Path) -> torch.export.ExportedProgram:
    images = torch.export.Dim("images", min=1, max=64)
    program = torch.export.export(Digits().eval(), (torch.zeros(2, 28, 28),),
                                  dynamic_shapes={"images": {0: images}})
    torch.export.save(program, str(path))
    return program


def export_two_inputs(path: Path) -> torch.export.ExportedProgram:
    rows = torch.export.Dim("rows", min=1, max=64)
    program = torch.export.export(
        TwoInputs().eval(), (torch.zeros(2, 4), torch.zeros(2)),
        dynamic_shapes={"x": {0: rows}, "ids": {0: rows}})
    torch.export.save(program, str(path))
    return program


def script_embedder(folder: Path) -> torch.jit.ScriptModule:
    module = torch.jit.script(Embedder().eval())
    module.save(str(folder / "model.pt"))
    (folder / "signature.json").write_text(json.dumps({
        "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, 5]},
                   {"name": "weights", "datatype": "FP32", "shape": [-1, 5]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 3]},
                    {"name": "top", "datatype": "INT64", "shape": [-1]}],
    }))
    return module


def rewrite_zip(source: Path, target: Path, change) -> Path:
    """A copy of the archive with `change(name, data)` applied to each member."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, change(item.filename, zin.read(item.filename)))
    return target


def from_a_newer_torch(source: Path, target: Path) -> Path:
    """The .pt2 as a torch with the next export format would have written it."""
    def change(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            program["schema_version"]["major"] += 1
            program["torch_version"] = "9.1.0"
            return json.dumps(program).encode()
        return data

    return rewrite_zip(source, target, change)


def torchscript_from_a_newer_torch(source: Path, target: Path) -> Path:
    return rewrite_zip(source, target,
                       lambda name, data: b"99\n" if name.endswith("/version") else data)
