//! The generated Milvus 1.1 wire types (`package milvus.grpc`), server and client.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("milvus.grpc");

/// The compiled `FileDescriptorSet` of `proto/milvus.proto` and `proto/status.proto`: what the contract
/// test compares with pymilvus 1.1.2, and what gRPC reflection could serve.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("milvus_descriptor");

/// Reply messages that carry a Milvus status: a failed call is still a reply, with only the status set.
pub trait WithStatus: Default {
    fn set_status(&mut self, status: Status);

    fn status(&self) -> Option<&Status>;

    fn failed(status: Status) -> Self {
        let mut reply = Self::default();
        reply.set_status(status);
        reply
    }
}

macro_rules! with_status {
    ($($t:ty),*) => {$(
        impl WithStatus for $t {
            fn set_status(&mut self, status: Status) { self.status = Some(status); }
            fn status(&self) -> Option<&Status> { self.status.as_ref() }
        }
    )*};
}

with_status!(
    BoolReply,
    CollectionSchema,
    CollectionRowCount,
    CollectionNameList,
    CollectionInfo,
    IndexParam,
    PartitionList,
    VectorIds,
    VectorsData,
    TopKQueryResult,
    StringReply
);

impl WithStatus for Status {
    fn set_status(&mut self, status: Status) {
        *self = status;
    }

    fn status(&self) -> Option<&Status> {
        Some(self)
    }
}
