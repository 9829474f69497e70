//! Insert throughput of a write node, through its gRPC API, with the write-ahead log on (every insert
//! acknowledged after fsync). Run: `cargo bench --bench node_insert -- [total_vectors] [batch] [clients]`.

use std::time::Instant;

use mishards::config::{NodeConfig, Scope};
use mishards::proto::{self, milvus_service_client::MilvusServiceClient};

mod common;
use common::{SplitMix64, arg, settings, vector};

#[tokio::main]
async fn main() {
    let (total, batch, clients, dim) = (
        arg(0, 1_000_000) as usize,
        arg(1, 10_000) as usize,
        arg(2, 4) as usize,
        128usize,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = settings(
        Scope::Node,
        &[
            ("role", "rw".to_string()),
            ("host", "127.0.0.1".to_string()),
            ("port", "0".to_string()),
            ("storage", dir.path().display().to_string()),
        ],
    );
    let node = mishards::node::start(&NodeConfig::from_settings(&settings).expect("config"))
        .await
        .expect("node");
    let url = format!("http://{}", node.addr);
    let mut c = MilvusServiceClient::connect(url.clone())
        .await
        .expect("connect");
    c.create_collection(proto::CollectionSchema {
        collection_name: "bench".into(),
        dimension: dim as i64,
        index_file_size: 1024,
        metric_type: 1,
        ..Default::default()
    })
    .await
    .expect("create");
    let mut rng = SplitMix64::new(0x9E37_79B9_7F4A_7C15);
    let records: Vec<proto::RowRecord> = (0..batch)
        .map(|_| proto::RowRecord {
            float_data: vector(&mut rng, dim),
            binary_data: Vec::new(),
        })
        .collect();
    let batches = total.div_ceil(batch);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let (url, records) = (url.clone(), records.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = MilvusServiceClient::connect(url)
                .await
                .expect("connect")
                .max_encoding_message_size(300 << 20);
            let mut sent = 0;
            for _ in (worker..batches).step_by(clients) {
                let reply = c
                    .insert(proto::InsertParam {
                        collection_name: "bench".into(),
                        row_record_array: records.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("insert")
                    .into_inner();
                assert_eq!(reply.status.map(|s| s.error_code), Some(0));
                sent += reply.vector_id_array.len();
            }
            sent
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await.expect("worker");
    }
    let seconds = started.elapsed().as_secs_f64();
    c.flush(proto::FlushParam::default()).await.expect("flush");
    let count = c
        .count_collection(proto::CollectionName {
            collection_name: "bench".into(),
        })
        .await
        .expect("count")
        .into_inner()
        .collection_row_count;
    println!(
        "inserted {inserted} vectors of {dim} dims in {seconds:.2} s with {clients} clients, batches of {batch}: \
         {:.0} vectors/s (WAL fsync on every acknowledged insert); after flush the collection counts {count}",
        inserted as f64 / seconds
    );
    node.shutdown().await;
}
