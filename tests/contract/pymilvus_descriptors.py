"""Print pymilvus 1.1.2's compiled status.proto and milvus.proto as one hex-encoded FileDescriptorSet."""

import sys

import milvus
from google.protobuf import descriptor_pb2
from milvus.grpc_gen import milvus_pb2, status_pb2

if not milvus.__version__.startswith("1.1.2"):
    sys.exit(f"expected pymilvus 1.1.2, found {milvus.__version__}")
fds = descriptor_pb2.FileDescriptorSet()
for module in (status_pb2, milvus_pb2):
    fds.file.add().MergeFromString(module.DESCRIPTOR.serialized_pb)
print(fds.SerializeToString().hex())
