//! The generated Milvus 1.1 wire types (`package milvus.grpc`), server and client.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("milvus.grpc");

/// The compiled `FileDescriptorSet` of `proto/milvus.proto` and `proto/status.proto`: what the contract
/// test compares with pymilvus 1.1.2, and what gRPC reflection could serve.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("milvus_descriptor");
