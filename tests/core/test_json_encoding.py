"""The JSON encoder keeps the shape of string arrays (v1 answers) and unwraps 0-d arrays."""

import numpy as np
import orjson
import pytest

from modelserver.errors import InvalidInput
from modelserver.protocol.v2json import dumps


def test_nested_bytes_keep_their_shape():
    array = np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object)
    assert orjson.loads(dumps({"p": array})) == {"p": [["a", "b"], ["c", "d"]]}


def test_zero_d_arrays_are_values():
    assert orjson.loads(dumps({"n": np.array(3.5), "s": np.array(b"x", dtype=object)})) == {
        "n": 3.5, "s": "x"}


def test_flat_strings_stay_flat():
    assert orjson.loads(dumps({"p": np.array(["s", "t"])})) == {"p": ["s", "t"]}


def test_large_bodies_of_plain_numbers_are_read_as_buffers():
    """The quick way is taken for plain numbers, and left for anything it would get wrong."""
    import json

    from modelserver.protocol import v2json

    def body(data, datatype="FP32"):
        return json.dumps({"inputs": [{"name": "x", "datatype": datatype,
                                       "shape": [len(data)], "data": data}]}).encode()

    plain = body([0.25] * 10_000)
    assert len(plain) > v2json.LARGE_BODY
    request = v2json._decode_large(plain)
    assert request is not None and request.inputs[0].data.dtype == np.float32
    assert v2json._decode_large(body(["0.25"] * 10_000)) is None
    assert v2json._decode_large(body([1000] * 10_000, "INT8")) is None
    assert v2json._decode_large(b"{" + plain) is None
    assert v2json._decode_large(body([2**70] * 10_000, "FP64")) is None  # past 64 bits
    assert v2json.decode_body(body([2**70] * 10_000, "FP64")).inputs[0].data[0] == 2.0**70
    # Nested data goes the general way, which refuses it when it is not rectangular (flattened,
    # [[1, 2], [3]] would have fit a shape of [3]).
    ragged = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [15_000],
                                     "data": [[0.5] * 10_000, [0.5] * 5_000]}]}).encode()
    assert v2json._decode_large(ragged) is None
    with pytest.raises(InvalidInput, match="inhomogeneous"):
        v2json.decode_body(ragged)
