"""ONNX models for the tests, made in temporary folders: a scikit-learn pipeline through
skl2onnx, a torch module through torch.onnx.export, and graphs built with onnx.helper."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
# Rows of the pipeline's frame: two numeric columns and a text one.
FRAME = pd.DataFrame({
    "size": np.float32([1.0, 2.5, 3.0, 4.2, 5.1, 6.3, 0.7, 2.2]),
    "weight": np.float32([0.5, 0.1, 0.3, 0.9, 0.2, 0.4, 0.8, 0.6]),
    "city": ["oslo", "lima", "pune", "oslo", "lima", "pune", "oslo", "lima"],
})
LABELS = [0, 1, 2, 0, 1, 2, 0, 1]


def sklearn_pipeline(folder: Path, zipmap: bool = True):
    """A classifier over a frame with a text column, converted with skl2onnx: one input per
    column ([-1, 1] each), `output_label` and `output_probability` (a ZipMap unless
    `zipmap` is False). Returns the fitted pipeline."""
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pipeline = Pipeline([
        ("columns", ColumnTransformer([
            ("numbers", StandardScaler(), ["size", "weight"]),
            ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ])),
        ("classifier", LogisticRegression()),
    ]).fit(FRAME, LABELS)
    options = None if zipmap else {LogisticRegression: {"zipmap": False}}
    model = to_onnx(pipeline, FRAME[:1], options=options,
                    target_opset={"": 17, "ai.onnx.ml": 3})
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return pipeline


def torch_classifier(folder: Path) -> None:
    """torch.onnx.export with a dynamic batch dimension; its weights go to model.onnx.data."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.hidden = torch.nn.Linear(4, 8)
            self.out = torch.nn.Linear(8, 3)

        def forward(self, features):
            logits = self.out(torch.relu(self.hidden(features)))
            return torch.softmax(logits, dim=1), logits.argmax(dim=1)

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch's own deprecation notices, from inside the exporter
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(Classifier().eval(), (torch.zeros(2, 4),), str(folder / "model.onnx"),
                          input_names=["features"], output_names=["probabilities", "label"],
                          dynamic_shapes={"features": {0: torch.export.Dim("batch")}})


# The typed graph's inputs, all with a first dimension "N": name -> (element type, other dims).
TYPED_INPUTS = {
    "x": (TensorProto.FLOAT, [3]),
    "mask": (TensorProto.BOOL, [3]),
    "ids": (TensorProto.INT64, []),
    "word": (TensorProto.STRING, []),
    "half": (TensorProto.FLOAT16, [2]),
    "double": (TensorProto.DOUBLE, []),
    "int8": (TensorProto.INT8, []),
    "int16": (TensorProto.INT16, []),
    "int32": (TensorProto.INT32, []),
    "uint8": (TensorProto.UINT8, []),
    "uint16": (TensorProto.UINT16, []),
    "uint32": (TensorProto.UINT32, []),
    "uint64": (TensorProto.UINT64, []),
    "brain": (TensorProto.BFLOAT16, [2]),
}
WORDS = {"cat": 1, "dog": 2}


def typed_graph(folder: Path) -> None:
    """Many inputs of every datatype: `masked` = where(mask, x, 0), `next_id` = ids + 1,
    `word_id` (a LabelEncoder: cat 1, dog 2, else -1), and `echo_<name>` for each input but x
    and mask, bfloat16 included."""
    inputs = [helper.make_tensor_value_info(name, kind, ["N", *dims])
              for name, (kind, dims) in TYPED_INPUTS.items()]
    outputs = [
        helper.make_tensor_value_info("masked", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("next_id", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("word_id", TensorProto.INT64, ["N"]),
    ]
    nodes = [
        helper.make_node("Where", ["mask", "x", "zero"], ["masked"]),
        helper.make_node("Add", ["ids", "one"], ["next_id"]),
        helper.make_node("LabelEncoder", ["word"], ["word_id"], domain="ai.onnx.ml",
                         keys_strings=list(WORDS), values_int64s=list(WORDS.values()),
                         default_int64=-1),
    ]
    for name, (kind, dims) in TYPED_INPUTS.items():
        if name not in ("x", "mask"):
            nodes.append(helper.make_node("Identity", [name], [f"echo_{name}"]))
            outputs.append(helper.make_tensor_value_info(f"echo_{name}", kind, ["N", *dims]))
    constants = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor("one", TensorProto.INT64, [], [1])]
    graph = helper.make_graph(nodes, "typed", inputs, outputs, initializer=constants)
    save(helper.make_model(graph, opset_imports=OPSETS), folder)


def open_shapes_graph(folder: Path) -> None:
    """`values` of open rank times the scalar `scale`, plus a sequence output, which the
    protocol cannot carry."""
    inputs = [helper.make_tensor_value_info("values", TensorProto.FLOAT, None),
              helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])]
    outputs = [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, None),
               helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)]
    nodes = [helper.make_node("Mul", ["values", "scale"], ["scaled"]),
             helper.make_node("SequenceConstruct", ["values", "scaled"], ["parts"])]
    # onnx's checker wants every output's shape: ONNX Runtime does not.
    save(helper.make_model(helper.make_graph(nodes, "open", inputs, outputs),
                           opset_imports=OPSETS), folder, check=False)


def adder(folder: Path, amount: float) -> None:
    """y = x + amount, for x of shape [-1, 2]."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])]
    nodes = [helper.make_node("Add", ["x", "amount"], ["y"])]
    constants = [helper.make_tensor("amount", TensorProto.FLOAT, [], [amount])]
    save(helper.make_model(helper.make_graph(nodes, "add", inputs, outputs,
                                             initializer=constants),
                           opset_imports=OPSETS), folder)


def save(model: onnx.ModelProto, folder: Path, check: bool = True) -> None:
    if check:
        onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
