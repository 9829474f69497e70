"""Render pymilvus 1.1.2's compiled descriptors back into .proto source.

proto/milvus.proto and proto/status.proto were produced by this script, so the wire contract is taken
from the client users actually run, not retyped by hand. tests/proto_contract.rs checks the result.

    python tests/contract/render_proto.py proto/
"""

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from milvus.grpc_gen import milvus_pb2, status_pb2

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64", F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64", F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32", F.TYPE_SINT64: "sint64",
}


def type_name(field, package):
    if field.type in SCALARS:
        return SCALARS[field.type]
    name = field.type_name.lstrip(".")
    prefix = package + "."
    return name[len(prefix):] if name.startswith(prefix) else name


def render_enum(enum, indent):
    pad = "    " * indent
    lines = [f"{pad}enum {enum.name} {{"]
    lines += [f"{pad}    {v.name} = {v.number};" for v in enum.value]
    lines.append(f"{pad}}}")
    return lines


def render_message(msg, package, indent):
    pad = "    " * indent
    lines = [f"{pad}message {msg.name} {{"]
    for nested in msg.enum_type:
        lines += render_enum(nested, indent + 1)
    for nested in msg.nested_type:
        lines += render_message(nested, package, indent + 1)
    oneofs = {}
    for field in msg.field:
        if field.HasField("oneof_index"):
            oneofs.setdefault(field.oneof_index, []).append(field)
    emitted_oneofs = set()
    for field in msg.field:
        if field.HasField("oneof_index"):
            if field.oneof_index in emitted_oneofs:
                continue
            emitted_oneofs.add(field.oneof_index)
            lines.append(f"{pad}    oneof {msg.oneof_decl[field.oneof_index].name} {{")
            for member in oneofs[field.oneof_index]:
                lines.append(f"{pad}        {type_name(member, package)} {member.name} = {member.number};")
            lines.append(f"{pad}    }}")
            continue
        label = "repeated " if field.label == F.LABEL_REPEATED else ""
        lines.append(f"{pad}    {label}{type_name(field, package)} {field.name} = {field.number};")
    lines.append(f"{pad}}}")
    return lines


def render_file(fdp):
    out = [
        "// Milvus 1.1 wire contract, rendered from pymilvus 1.1.2's descriptors by",
        "// tests/contract/render_proto.py. Do not edit by hand: tests/proto_contract.rs fails on any drift.",
        f'syntax = "{fdp.syntax or "proto2"}";',
        "",
    ]
    out += [f'import "{dep}";' for dep in fdp.dependency]
    if fdp.dependency:
        out.append("")
    out += [f"package {fdp.package};", ""]
    for enum in fdp.enum_type:
        out += render_enum(enum, 0) + [""]
    for msg in fdp.message_type:
        out += render_message(msg, fdp.package, 0) + [""]
    for service in fdp.service:
        out.append(f"service {service.name} {{")
        for m in service.method:
            cs = "stream " if m.client_streaming else ""
            ss = "stream " if m.server_streaming else ""
            inp = m.input_type.lstrip(".").removeprefix(fdp.package + ".")
            outp = m.output_type.lstrip(".").removeprefix(fdp.package + ".")
            out.append(f"    rpc {m.name}({cs}{inp}) returns ({ss}{outp}) {{}}")
        out += ["}", ""]
    return "\n".join(out).rstrip() + "\n"


def main():
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "proto")
    for module in (status_pb2, milvus_pb2):
        fdp = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        (target / fdp.name).write_text(render_file(fdp))


if __name__ == "__main__":
    main()
