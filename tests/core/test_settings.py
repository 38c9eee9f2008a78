"""Model settings: one typed object, resolved from flags, then settings.json, then the runtime's
defaults, then the server's; wrong settings are refused with where they came from."""

from __future__ import annotations

import pytest

from modelserver.args import add_runtime_flags, build_parser, flag_settings, parse_args
from modelserver.settings import ModelSettings, resolve


def test_the_first_layer_that_gives_a_setting_wins():
    settings = resolve(({"request_timeout_seconds": 5}, "flags"),
                       ({"request_timeout_seconds": 9, "outputs": ["b"]}, "settings.json"),
                       ({"max_batch_size": 64, "outputs": ["a"]}, "runtime"),
                       ({"threads": 3}, "server"))
    assert settings == ModelSettings(max_batch_size=64, outputs=("b",),
                                     request_timeout_seconds=5.0, threads=3)
    assert settings.batch_rows == 64 and settings.max_batch_delay == 0


def test_parameters_merge_key_by_key():
    settings = resolve(({"parameters": {"nthread": 2}}, "flags"),
                       ({"parameters": {"nthread": 8, "other": "x"}}, "settings.json"))
    assert settings.parameters == {"nthread": 2, "other": "x"}
    assert settings.parameter("other") == "x" and settings.parameter("missing", 7) == 7


def test_zero_rows_turns_merging_off_but_keeps_a_row_wise_models_rows():
    off = resolve(({"max_batch_size": 0}, "flags"), ({"max_batch_size": 128}, "runtime"))
    assert off.max_batch_size == 128 and not off.dynamic_batching and off.batch_rows == 0
    on = resolve(({"max_batch_size": 16}, "flags"), ({"max_batch_size": 0}, "settings.json"))
    assert on.batch_rows == 16
    undecided = resolve(({}, "flags"))
    assert undecided.max_batch_size is None
    assert undecided.default(max_batch_size=32).batch_rows == 32
    assert off.default(max_batch_size=32) is off  # only what is still open


@pytest.mark.parametrize("layer,message", [
    ({"max_batch_sise": 8}, "unknown setting 'max_batch_sise'"),
    ({"max_batch_size": "8"}, "max_batch_size must be a whole number"),
    ({"max_batch_size": True}, "max_batch_size must be a whole number"),
    ({"max_batch_size": False}, "max_batch_size must be a whole number"),  # not a quiet 0
    ({"max_batch_size": 0.0}, "max_batch_size must be a whole number"),
    ({"request_timeout_seconds": -1}, "request_timeout_seconds must be a number >= 0"),
    ({"outputs": "predict"}, "outputs must be a list"),
    ({"parameters": [1]}, "parameters must be an object"),
    ({"dynamic_batching": "no"}, "dynamic_batching must be true or false"),
    ({"inputs": {"city": "BYTES"}}, "inputs must be a list like"),
    ({"inputs": [{"name": "city"}]}, "must be an object with a name and a datatype"),
    ({"inputs": [{"name": "city", "datatype": "BYTES", "shape": [-1]}]}, "with a name and a"),
    ({"inputs": [{"name": "city", "datatype": "STRING"}]}, "has datatype 'STRING'; the datatypes"),
    ({"inputs": [{"name": "a", "datatype": "BYTES"}, {"name": "a", "datatype": "INT64"}]},
     "named twice"),
])
def test_wrong_settings_say_where_they_came_from(layer, message):
    with pytest.raises(ValueError, match=message) as caught:
        resolve((layer, "/models/m/settings.json"))
    assert "/models/m/settings.json" in str(caught.value)


def test_runtime_flags_become_parameters_and_model_flags_override():
    parser = build_parser("xgbserver")
    add_runtime_flags(parser, "xgbserver", {"nthread": {"type": int}})
    args = parse_args(parser, ["--nthread", "4", "--max_batch_size", "0"])
    assert flag_settings(args) == {"max_batch_size": 0, "parameters": {"nthread": 4}}
    assert flag_settings(parse_args(parser, [])) == {}


def test_inputs_give_metadata_datatypes_by_name():
    settings = resolve(({"inputs": [{"name": "city", "datatype": "BYTES"},
                                    {"name": "rooms", "datatype": "INT64"}]}, "settings.json"))
    assert settings.inputs == ({"name": "city", "datatype": "BYTES"},
                               {"name": "rooms", "datatype": "INT64"})
    assert resolve(({}, "flags")).inputs is None
