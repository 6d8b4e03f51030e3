"""The service's contract as .proto text, rebuilt from the descriptor embedded in people.

The seed decoded its ``serialized_protobuf`` by hand and printed the raw
FileDescriptorProto; this renders the same data back into the syntax it was
written in, so ``people schema`` shows what a client needs without a proto file.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from people._gen.people import PEOPLE_PROTO_DESCRIPTOR

Field = descriptor_pb2.FieldDescriptorProto

_SCALARS = {
    Field.TYPE_DOUBLE: "double",
    Field.TYPE_FLOAT: "float",
    Field.TYPE_INT64: "int64",
    Field.TYPE_UINT64: "uint64",
    Field.TYPE_INT32: "int32",
    Field.TYPE_FIXED64: "fixed64",
    Field.TYPE_FIXED32: "fixed32",
    Field.TYPE_BOOL: "bool",
    Field.TYPE_STRING: "string",
    Field.TYPE_BYTES: "bytes",
    Field.TYPE_UINT32: "uint32",
    Field.TYPE_SFIXED32: "sfixed32",
    Field.TYPE_SFIXED64: "sfixed64",
    Field.TYPE_SINT32: "sint32",
    Field.TYPE_SINT64: "sint64",
}


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The embedded FileDescriptorProto of people.proto."""
    proto = descriptor_pb2.FileDescriptorProto()
    proto.ParseFromString(PEOPLE_PROTO_DESCRIPTOR.serialized_pb)
    return proto


def render(proto: descriptor_pb2.FileDescriptorProto) -> str:
    """Return ``proto`` as .proto source text that compiles back to the same descriptor."""
    lines = [f'syntax = "{proto.syntax or "proto2"}";', ""]
    if proto.package:
        lines += [f"package {proto.package};", ""]
    if proto.dependency:
        lines += [*(f'import "{name}";' for name in proto.dependency), ""]
    for enum in proto.enum_type:
        lines += [*_enum(enum, ""), ""]
    for message in proto.message_type:
        lines += [*_message(message, proto.package, ""), ""]
    for service in proto.service:
        lines.append(f"service {service.name} {{")
        for method in service.method:
            request = _stream(method.client_streaming) + _type_name(
                method.input_type, proto.package
            )
            response = _stream(method.server_streaming) + _type_name(
                method.output_type, proto.package
            )
            lines.append(f"  rpc {method.name} ({request}) returns ({response});")
        lines += ["}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _message(message: descriptor_pb2.DescriptorProto, package: str, indent: str) -> list[str]:
    if not message.field and not message.nested_type and not message.enum_type:
        return [f"{indent}message {message.name} {{}}"]
    inner = indent + "  "
    lines = [f"{indent}message {message.name} {{"]
    for enum in message.enum_type:
        lines += _enum(enum, inner)
    for nested in message.nested_type:
        lines += _message(nested, package, inner)
    for field in message.field:
        label = ""
        if field.label == Field.LABEL_REPEATED:
            label = "repeated "
        elif field.proto3_optional:
            label = "optional "
        kind = _SCALARS.get(field.type) or _type_name(field.type_name, package)
        lines.append(f"{inner}{label}{kind} {field.name} = {field.number};")
    lines.append(f"{indent}}}")
    return lines


def _enum(enum: descriptor_pb2.EnumDescriptorProto, indent: str) -> list[str]:
    values = [f"{indent}  {value.name} = {value.number};" for value in enum.value]
    return [f"{indent}enum {enum.name} {{", *values, f"{indent}}}"]


def _type_name(name: str, package: str) -> str:
    """``.people.User`` inside package people is ``User``; other packages keep their prefix."""
    name = name.removeprefix(".")
    return name.removeprefix(f"{package}.") if package else name


def _stream(streaming: bool) -> str:
    return "stream " if streaming else ""
