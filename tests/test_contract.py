"""The contract: proto/people.proto keeps the seed's descriptor and only adds to it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from people._gen.people import PEOPLE_PROTO_DESCRIPTOR

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
SEED_COPY = ROOT / "tests" / "seed" / "000_429682d8b024c27e.txt"
SHARED = ROOT.parent / "shared"
SHARED_SEED = SHARED / "seed" / SEED_COPY.name

FieldKey = tuple[str, int, int, int, str]


def compile_proto(proto_dir: Path, name: str, out: Path) -> descriptor_pb2.FileDescriptorProto:
    """Compile ``proto_dir/name`` with grpc_tools' protoc and return its FileDescriptorProto."""
    well_known = resources.files("grpc_tools") / "_proto"
    descriptor_set = out / f"{name}.descriptor_set"
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--descriptor_set_out={descriptor_set}",
            name,
        ]
    )
    assert code == 0, f"protoc failed on {proto_dir / name}"
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    (compiled,) = files.file
    return compiled


def strip_json_names(proto: descriptor_pb2.FileDescriptorProto) -> None:
    """Drop json_name, which protoc fills in and the seed's generated code left out."""
    for message in proto.message_type:
        for field in message.field:
            field.ClearField("json_name")


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    """proto/people.proto compiled by protoc."""
    return compile_proto(PROTO_DIR, "people.proto", tmp_path_factory.mktemp("ours"))


@pytest.fixture(scope="module")
def seed(seed_serialized_protobuf: bytes) -> descriptor_pb2.FileDescriptorProto:
    """The seed's descriptor, as printed in the seed notebook."""
    return descriptor_pb2.FileDescriptorProto.FromString(seed_serialized_protobuf)


def fields(message: descriptor_pb2.DescriptorProto) -> dict[str, FieldKey]:
    """Each field's name, number, type, label and type_name, by name."""
    return {
        field.name: (field.name, field.number, field.type, field.label, field.type_name)
        for field in message.field
    }


class TestSeedContract:
    """Every part of the seed's contract is in ours, unchanged."""

    def test_seed_is_what_it_claims(self, seed: descriptor_pb2.FileDescriptorProto) -> None:
        """The seed's descriptor holds its 7 messages and 5 RPCs in package people."""
        assert seed.package == "people"
        assert len(seed.message_type) == 7
        assert [method.name for method in seed.service[0].method] == [
            "GetAllUsers",
            "CreateUser",
            "GetUserById",
            "UpdateUser",
            "DeleteUserById",
        ]

    def test_seed_proto_text_compiles_to_the_seed_descriptor(
        self, seed_proto_text: str, seed: descriptor_pb2.FileDescriptorProto, tmp_path: Path
    ) -> None:
        """The proto text in the notebook compiles to the notebook's serialized_protobuf."""
        (tmp_path / "people.proto").write_text(seed_proto_text, encoding="utf-8")
        compiled = compile_proto(tmp_path, "people.proto", tmp_path)
        strip_json_names(compiled)
        assert compiled == seed

    def test_same_file_package_and_syntax(
        self, ours: descriptor_pb2.FileDescriptorProto, seed: descriptor_pb2.FileDescriptorProto
    ) -> None:
        """Ours is people.proto, package people, proto3, like the seed."""
        assert (ours.name, ours.package, ours.syntax) == (seed.name, seed.package, seed.syntax)
        assert ours.options == seed.options

    def test_every_seed_message_and_field(
        self, ours: descriptor_pb2.FileDescriptorProto, seed: descriptor_pb2.FileDescriptorProto
    ) -> None:
        """Each seed message exists with each field's name, number, type, label and type_name."""
        our_messages = {message.name: message for message in ours.message_type}
        for message in seed.message_type:
            assert message.name in our_messages, f"message {message.name} is missing"
            mine = fields(our_messages[message.name])
            for name, key in fields(message).items():
                assert mine.get(name) == key, f"{message.name}.{name} changed"

    def test_additions_do_not_reuse_seed_numbers(
        self, ours: descriptor_pb2.FileDescriptorProto, seed: descriptor_pb2.FileDescriptorProto
    ) -> None:
        """Fields added to seed messages take numbers and names the seed did not use."""
        seed_messages = {message.name: message for message in seed.message_type}
        for message in ours.message_type:
            if message.name not in seed_messages:
                continue
            original = seed_messages[message.name]
            seed_numbers = {field.number for field in original.field}
            seed_names = {field.name for field in original.field}
            for field in message.field:
                if field.name not in seed_names:
                    assert field.number not in seed_numbers, f"{message.name}.{field.name}"
            assert list(message.oneof_decl) == list(original.oneof_decl)
            assert message.options == original.options

    def test_every_seed_rpc(
        self, ours: descriptor_pb2.FileDescriptorProto, seed: descriptor_pb2.FileDescriptorProto
    ) -> None:
        """Each seed RPC exists in UserService with the same input and output, unary."""
        (seed_service,) = seed.service
        services = {service.name: service for service in ours.service}
        assert seed_service.name in services
        methods = {method.name: method for method in services[seed_service.name].method}
        for method in seed_service.method:
            assert method.name in methods, f"rpc {method.name} is missing"
            assert methods[method.name] == method, f"rpc {method.name} changed"

    def test_only_additions(
        self, ours: descriptor_pb2.FileDescriptorProto, seed: descriptor_pb2.FileDescriptorProto
    ) -> None:
        """Removing what we added from ours gives back exactly the seed's descriptor."""
        stripped = descriptor_pb2.FileDescriptorProto()
        stripped.CopyFrom(ours)
        strip_json_names(stripped)
        del stripped.dependency[:]
        seed_messages = {message.name: fields(message) for message in seed.message_type}
        kept = [message for message in stripped.message_type if message.name in seed_messages]
        for message in kept:
            originals = seed_messages[message.name]
            keep = [field for field in message.field if field.name in originals]
            del message.field[:]
            message.field.extend(keep)
        del stripped.message_type[:]
        stripped.message_type.extend(kept)
        seed_methods = {method.name for method in seed.service[0].method}
        for service in stripped.service:
            keep_methods = [method for method in service.method if method.name in seed_methods]
            del service.method[:]
            service.method.extend(keep_methods)
        assert stripped == seed


class TestAdditions:
    """What was added after the seed keeps the numbers and shapes it was released with."""

    @pytest.mark.parametrize(
        ("message", "name", "number", "type_name"),
        [
            ("CreateUserResponse", "user", 3, ".people.User"),
            ("UpdateUserResponse", "user", 2, ".people.User"),
            ("ListUsersRequest", "page_size", 1, ""),
            ("ListUsersRequest", "page_token", 2, ""),
            ("ListUsersRequest", "filter", 3, ""),
            ("ListUsersRequest", "order_by", 4, ""),
            ("BatchGetUsersRequest", "ids", 1, ""),
            ("BatchGetUsersResponse", "users", 1, ".people.User"),
            ("BatchCreateUsersRequest", "requests", 1, ".people.CreateUserRequest"),
            ("BatchCreateUsersResponse", "users", 1, ".people.User"),
        ],
    )
    def test_field(
        self,
        ours: descriptor_pb2.FileDescriptorProto,
        message: str,
        name: str,
        number: int,
        type_name: str,
    ) -> None:
        """Each added field has its number and type."""
        (found,) = [m for m in ours.message_type if m.name == message]
        (field,) = [f for f in found.field if f.name == name]
        assert (field.number, field.type_name) == (number, type_name)

    def test_rpcs_in_order(self, ours: descriptor_pb2.FileDescriptorProto) -> None:
        """The RPCs added after the seed follow its five, in the order they were added."""
        (service,) = ours.service
        assert [(m.name, m.input_type, m.output_type) for m in service.method][5:] == [
            ("ListUsers", ".people.ListUsersRequest", ".people.ListUsersResponse"),
            ("BatchGetUsers", ".people.BatchGetUsersRequest", ".people.BatchGetUsersResponse"),
            (
                "BatchCreateUsers",
                ".people.BatchCreateUsersRequest",
                ".people.BatchCreateUsersResponse",
            ),
        ]


class TestGeneratedCode:
    """The descriptor embedded in people._gen is the one proto/people.proto compiles to."""

    def test_embedded_descriptor_matches_the_proto(
        self, ours: descriptor_pb2.FileDescriptorProto
    ) -> None:
        """people._gen carries exactly protoc's FileDescriptorProto for proto/people.proto."""
        embedded = descriptor_pb2.FileDescriptorProto()
        PEOPLE_PROTO_DESCRIPTOR.CopyToProto(embedded)
        assert embedded == ours

    def test_pool_resolves_the_service(self) -> None:
        """The generated pool knows people.UserService and all of its methods."""
        service = PEOPLE_PROTO_DESCRIPTOR.pool.FindServiceByName("people.UserService")
        assert {method.name for method in service.methods} >= {
            "GetAllUsers",
            "CreateUser",
            "GetUserById",
            "UpdateUser",
            "DeleteUserById",
            "ListUsers",
            "BatchGetUsers",
            "BatchCreateUsers",
        }


class TestSeedCopy:
    """tests/seed holds the seed notebook verbatim."""

    def test_identical_to_the_shared_seed(self) -> None:
        """The copy beside the tests is byte-for-byte the shared seed notebook."""
        if not SHARED.is_dir():
            pytest.skip(f"{SHARED} is not present beside this checkout")
        assert SEED_COPY.read_bytes() == SHARED_SEED.read_bytes()
