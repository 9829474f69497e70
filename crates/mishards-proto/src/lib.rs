//! The generated Milvus 1.1 wire types (`package milvus.grpc`), server and client; the search limits
//! every layer enforces ([`limits`]); and how any module's error becomes a Milvus `Status` ([`error`]).

pub mod error;
pub mod limits;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("milvus.grpc");
}
pub use generated::*;

/// The compiled `FileDescriptorSet` of `proto/milvus.proto` and `proto/status.proto`: what the contract
/// test compares with pymilvus 1.1.2, and what gRPC reflection could serve.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("milvus_descriptor");

/// Every Milvus 1.1 RPC of `MilvusService`, and whether it answers a bare `Status` (the
/// others answer a message whose field 1 is the `Status`).
pub const RPCS: &[(&str, bool)] = &[
    ("CreateCollection", true),
    ("HasCollection", false),
    ("DescribeCollection", false),
    ("CountCollection", false),
    ("ShowCollections", false),
    ("ShowCollectionInfo", false),
    ("DropCollection", true),
    ("CreateIndex", true),
    ("DescribeIndex", false),
    ("DropIndex", true),
    ("CreatePartition", true),
    ("HasPartition", false),
    ("ShowPartitions", false),
    ("DropPartition", true),
    ("Insert", false),
    ("GetVectorsByID", false),
    ("GetVectorIDs", false),
    ("Search", false),
    ("SearchByID", false),
    ("SearchInFiles", false),
    ("Cmd", false),
    ("DeleteByID", true),
    ("PreloadCollection", true),
    ("ReleaseCollection", true),
    ("ReloadSegments", true),
    ("Flush", true),
    ("Compact", true),
    ("CreateHybridCollection", true),
    ("HasHybridCollection", false),
    ("DropHybridCollection", true),
    ("DescribeHybridCollection", false),
    ("CountHybridCollection", false),
    ("ShowHybridCollections", false),
    ("ShowHybridCollectionInfo", false),
    ("PreloadHybridCollection", true),
    ("InsertEntity", false),
    ("HybridSearch", false),
    ("HybridSearchInSegments", false),
    ("GetEntityByID", false),
    ("GetEntityIDs", false),
    ("DeleteEntitiesByID", true),
];

/// Where `rpc` is in [`RPCS`].
pub fn rpc_index(rpc: &str) -> Option<usize> {
    RPCS.iter().position(|(name, _)| *name == rpc)
}

/// The static name of a known RPC (no allocation per request for the common case).
pub fn rpc_name(rpc: &str) -> Option<&'static str> {
    rpc_index(rpc).map(|i| RPCS[i].0)
}

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

/// Why the hybrid (entity) RPCs are refused: Milvus 1.1 clients use the vector RPCs.
pub const HYBRID_UNSERVED: &str =
    "hybrid collections are not served: Milvus 1.1 clients use the vector RPCs";

/// The 14 hybrid-collection RPCs of `MilvusService`, each answering gRPC `UNIMPLEMENTED` with
/// [`HYBRID_UNSERVED`]: expand it inside an `impl MilvusService for …` block.
#[macro_export]
macro_rules! unserved_hybrid_rpcs {
    () => {
        $crate::unserved_hybrid_rpcs! {
            create_hybrid_collection(Mapping) -> Status;
            has_hybrid_collection(CollectionName) -> BoolReply;
            drop_hybrid_collection(CollectionName) -> Status;
            describe_hybrid_collection(CollectionName) -> Mapping;
            count_hybrid_collection(CollectionName) -> CollectionRowCount;
            show_hybrid_collections(Command) -> MappingList;
            show_hybrid_collection_info(CollectionName) -> CollectionInfo;
            preload_hybrid_collection(CollectionName) -> Status;
            insert_entity(HInsertParam) -> HEntityIDs;
            hybrid_search(HSearchParam) -> TopKQueryResult;
            hybrid_search_in_segments(HSearchInSegmentsParam) -> TopKQueryResult;
            get_entity_by_id(HEntityIdentity) -> HEntity;
            get_entity_i_ds(HGetEntityIDsParam) -> HEntityIDs;
            delete_entities_by_id(HDeleteByIdParam) -> Status;
        }
    };
    // Written as `#[async_trait]` expands an `async fn`, because the tonic trait is declared through it
    // and an attribute on the impl does not see inside a macro call.
    ($($rpc:ident($req:ident) -> $resp:ident;)*) => {$(
        fn $rpc<'life0, 'async_trait>(
            &'life0 self,
            _request: ::tonic::Request<$crate::$req>,
        ) -> ::std::pin::Pin<
            Box<
                dyn ::std::future::Future<
                        Output = ::std::result::Result<::tonic::Response<$crate::$resp>, ::tonic::Status>,
                    > + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(::tonic::Status::unimplemented($crate::HYBRID_UNSERVED)) })
        }
    )*};
}
