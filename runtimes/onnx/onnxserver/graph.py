"""Graphs that ONNX Runtime's Python API cannot serve as they are, rewritten at load with the
`onnx` package:

- a `ZipMap` that makes a graph output (skl2onnx's default for a classifier's probabilities: a
  sequence of {label: probability} maps, one per row) becomes the FP32 [rows, classes] tensor it
  is made from, its columns in the order of the classifier's labels;
- bfloat16 inputs and outputs become FP32 through a `Cast`: numpy has no bfloat16 that ONNX
  Runtime's Python API takes or returns, so the protocol's BF16 travels as FP32 here.

Only a model that needs it is read with `onnx`; the others go to ONNX Runtime as they are."""

from __future__ import annotations

from pathlib import Path

ZIPMAP_OUTPUT = "seq(map("  # how ONNX Runtime writes the type of a ZipMap's output
BFLOAT16 = "tensor(bfloat16)"


def needs_rewriting(session) -> bool:
    outputs, inputs = session.get_outputs(), session.get_inputs()
    return any(arg.type.startswith(ZIPMAP_OUTPUT) for arg in outputs) or any(
        arg.type == BFLOAT16 for arg in inputs + outputs)


def rewritten(path: Path) -> bytes:
    """The model at `path` (with any external data) with its ZipMap outputs and bfloat16 inputs
    and outputs rewritten, serialized for ONNX Runtime."""
    import onnx

    model = onnx.load(str(path))
    _unzip_maps(onnx, model.graph)
    _bfloat16_as_float(onnx, model.graph)
    return model.SerializeToString()


def declared_ranks(path: Path) -> dict[str, int | None]:
    """The rank of each graph input and output, None where the graph leaves it open: ONNX
    Runtime reports both an open rank and a scalar as the shape []."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {value.name: (len(value.type.tensor_type.shape.dim)
                         if value.type.tensor_type.HasField("shape") else None)
            for value in [*graph.input, *graph.output]}


def _unzip_maps(onnx, graph) -> None:
    outputs = {value.name: value for value in graph.output}
    used = {name for node in graph.node for name in node.input}
    for node in graph.node:
        if node.op_type != "ZipMap" or node.output[0] not in outputs or node.output[0] in used:
            continue
        labels = next((len(a.ints) or len(a.strings) for a in node.attribute
                       if a.name in ("classlabels_int64s", "classlabels_strings")), None)
        identity = onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                         name=node.name)
        node.CopyFrom(identity)
        output = outputs[node.output[0]]
        output.CopyFrom(onnx.helper.make_tensor_value_info(
            output.name, onnx.TensorProto.FLOAT, [None, labels]))


def _bfloat16_as_float(onnx, graph) -> None:
    bfloat16, float32 = onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT
    make_node = onnx.helper.make_node
    first, last = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == bfloat16:
            inner = _unused_name(graph, value.name + "_bfloat16")
            _rename(graph, value.name, inner)
            value.type.tensor_type.elem_type = float32
            first.append(make_node("Cast", [value.name], [inner], to=bfloat16))
    for value in graph.output:
        if value.type.tensor_type.elem_type == bfloat16:
            inner = _unused_name(graph, value.name + "_bfloat16")
            _rename(graph, value.name, inner)
            value.type.tensor_type.elem_type = float32
            last.append(make_node("Cast", [inner], [value.name], to=float32))
    if first or last:
        nodes = [*first, *graph.node, *last]  # a graph's nodes are in the order they run
        del graph.node[:]
        graph.node.extend(nodes)


def _rename(graph, old: str, new: str) -> None:
    """Every use of the value `old` inside `graph`'s nodes (and their subgraphs) as `new`."""
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
        for attribute in node.attribute:
            for subgraph in [*([attribute.g] if attribute.HasField("g") else []),
                             *attribute.graphs]:
                _rename(subgraph, old, new)
    for value in graph.value_info:
        if value.name == old:
            value.name = new


def _unused_name(graph, name: str) -> str:
    taken = {n for node in graph.node for n in [*node.input, *node.output]}
    taken |= {v.name for v in [*graph.input, *graph.output, *graph.initializer]}
    candidate, i = name, 0
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    return candidate
