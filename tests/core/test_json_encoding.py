"""The JSON encoder keeps the shape of string arrays (v1 answers) and unwraps 0-d arrays."""

import numpy as np
import orjson

from modelserver.protocol.v2json import dumps


def test_nested_bytes_keep_their_shape():
    array = np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object)
    assert orjson.loads(dumps({"p": array})) == {"p": [["a", "b"], ["c", "d"]]}


def test_zero_d_arrays_are_values():
    assert orjson.loads(dumps({"n": np.array(3.5), "s": np.array(b"x", dtype=object)})) == {
        "n": 3.5, "s": "x"}


def test_flat_strings_stay_flat():
    assert orjson.loads(dumps({"p": np.array(["s", "t"])})) == {"p": ["s", "t"]}
