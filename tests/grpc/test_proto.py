"""Our grpc_service.proto against the one tritonclient was built from, and the generated
modules against the .proto (`make proto`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton

from modelserver.protocol.proto import grpc_service_pb2 as ours
from modelserver.protocol.proto import grpc_service_pb2_grpc as ours_grpc

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "runtimes" / "modelserver" / "modelserver" / "protocol" / "proto"


def _triton_message(full_name: str):
    for pool_file in (triton.DESCRIPTOR, triton_config.DESCRIPTOR):
        try:
            return pool_file.pool.FindMessageTypeByName(full_name)
        except KeyError:
            continue
    raise AssertionError(f"tritonclient has no message {full_name}")


def _messages(descriptor):
    yield descriptor
    for nested in descriptor.nested_types:
        if not nested.GetOptions().map_entry:
            yield from _messages(nested)


def test_every_field_matches_tritonclient_on_the_wire():
    compared = 0
    for top in ours.DESCRIPTOR.message_types_by_name.values():
        for message in _messages(top):
            theirs = _triton_message(message.full_name)
            for field in message.fields:
                other = theirs.fields_by_number.get(field.number)
                assert other is not None, f"{message.full_name}.{field.name}"
                assert (other.name, other.type, other.is_repeated) == \
                    (field.name, field.type, field.is_repeated), f"{message.full_name}.{field.name}"
                if field.message_type is not None:
                    assert other.message_type.full_name == field.message_type.full_name
                compared += 1
    assert compared > 100


def test_enums_match_tritonclient():
    ours_types = ours.DESCRIPTOR.enum_types_by_name["DataType"]
    theirs = triton_config.DESCRIPTOR.enum_types_by_name["DataType"]
    assert [(v.name, v.number) for v in ours_types.values] == \
        [(v.name, v.number) for v in theirs.values]


def test_the_service_is_tritons_for_the_rpcs_served():
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in service.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == \
            (other.input_type.full_name, other.output_type.full_name)
    for name in ("ModelInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex",
                 "RepositoryModelLoad", "RepositoryModelUnload"):
        assert hasattr(ours_grpc.GRPCInferenceServiceServicer, name)


def test_our_messages_do_not_take_names_in_the_default_pool():
    # Why tritonclient (imported above) and this package load side by side.
    assert ours.DESCRIPTOR.pool is not triton.DESCRIPTOR.pool
    assert triton.ModelInferRequest.DESCRIPTOR.file.name == "grpc_service.proto"


def test_make_proto_regenerates_the_committed_modules(tmp_path):
    run = subprocess.run(["make", "-s", "proto", f"PROTO_OUT={tmp_path}", f"PY={sys.executable}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    generated = tmp_path / "modelserver" / "protocol" / "proto"
    for name in ("grpc_service_pb2.py", "grpc_service_pb2_grpc.py", "grpc_service_pb2.pyi"):
        assert (generated / name).is_file(), name
    # The generated module builds into a pool of its own, so it can run beside ours.
    namespace: dict = {"__name__": "regenerated_pb2"}
    exec(compile((generated / "grpc_service_pb2.py").read_text(), "regenerated", "exec"),
         namespace)
    fresh = descriptor_pb2.FileDescriptorProto.FromString(namespace["DESCRIPTOR"].serialized_pb)
    committed = descriptor_pb2.FileDescriptorProto.FromString(ours.DESCRIPTOR.serialized_pb)
    assert fresh == committed, "run `make proto` and commit the result"

    def stubs(path: Path) -> list[str]:  # which grpcio-tools made them aside
        return [line for line in path.read_text().splitlines()
                if not line.startswith("GRPC_GENERATED_VERSION")]

    assert stubs(generated / "grpc_service_pb2_grpc.py") == \
        stubs(PROTO / "grpc_service_pb2_grpc.py")
