//! The operator's console: a page at `/` of the admin listener showing the cluster, the collections'
//! files and their placement, the recent and slow searches with each one's fan-out as a waterfall, live
//! charts and (with fault injection on) the fault rules.
//!
//! The page is three static files embedded in the binary (`assets/`: HTML, CSS and one hand-written
//! script that draws its charts as SVG: no build step, no CDN, nothing fetched from elsewhere). It reads
//! the admin listener's JSON: `/cluster`, `/requests`, `/slow`, `/requests/{trace_id}`, and the endpoints
//! this module adds — `/collections` (files, sizes, rows, index types and owners, from the metadata
//! poller's snapshot and the routing actor's placement), `/live` (the per-second samples of `live.rs`),
//! `/console/info` (what the page needs to know of the gateway's settings) and `/console/faults` (the
//! fault rules and log, read-only, only with fault injection on; changing them still takes the token,
//! through `/faults`).

pub mod live;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::admin::{ASK_TIMEOUT, AdminState, error, query_number, unavailable};
use crate::metadata::{GetSnapshot, Snapshot};
use crate::routing::GetOwners;
use mishards_config::NodeAddr;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Everything the page loads comes from this listener; no inline script, no frames.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// How often the page refreshes the cluster view and the charts: a node's change of state shows
/// within a refresh of the link noticing it.
pub const REFRESH_MS: u64 = 1000;

/// The newest applied faults `/console/faults` shows (`GET /faults`, with the token, has all kept).
const FAULT_LOG_SHOWN: usize = 200;

/// Most files listed per collection in `/collections` (the totals count them all).
pub const MAX_FILES_LISTED: usize = 2000;

/// What the page needs to know of the gateway's settings (`/console/info`).
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleInfo {
    pub version: String,
    /// Tracing exports spans (a Jaeger link per search makes sense).
    pub tracing: bool,
    /// The Jaeger UI's base URL (`console_jaeger_url`); links are `{jaeger_url}/trace/{trace_id}`.
    pub jaeger_url: Option<String>,
    pub fault_injection: bool,
    /// How the gateway finds its read nodes (`static`, `file`, …).
    pub discovery_source: String,
    /// How often the page refreshes the cluster view.
    pub refresh_ms: u64,
    pub slow_query_ms: u64,
    pub inspect_keep: usize,
    pub live_keep_seconds: usize,
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small and embedded: always revalidate, so a new binary's page is what an operator sees.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
pub async fn index() -> Response {
    let mut answer = asset("text/html; charset=utf-8", INDEX_HTML);
    if let Ok(csp) = header::HeaderValue::from_str(CSP) {
        answer
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    answer
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub async fn info(State(s): State<Arc<AdminState>>) -> Response {
    Json(&s.console).into_response()
}

/// `GET /live?seconds=N`: the newest N per-second samples (all that are kept when absent), oldest first.
pub async fn live(State(s): State<Arc<AdminState>>, RawQuery(query): RawQuery) -> Response {
    let keep = s.live.keep();
    match query_number(query.as_deref(), "seconds", keep) {
        Ok(n) => Json(json!({
            "keep_seconds": keep,
            "samples": s.live.newest(n),
        }))
        .into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// `GET /console/faults`: the fault rules and the applied-fault log, for the page's read-only view;
/// 404 when fault injection is off.
pub async fn faults(State(s): State<Arc<AdminState>>) -> Response {
    let Some(handle) = &s.actors.faults else {
        return error(StatusCode::NOT_FOUND, "fault injection is off");
    };
    match handle.report().await {
        Ok(report) => {
            let shown = report.log.len().saturating_sub(FAULT_LOG_SHOWN);
            Json(json!({
                "seed": report.seed,
                "rules": report.rules,
                "log": &report.log[shown..],
                "log_kept": report.log.len(),
                "log_dropped": report.log_dropped,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Debug, Serialize)]
struct FileView {
    id: i64,
    /// The partition's tag; `_default` for the collection's own table.
    partition: String,
    segment: String,
    file: String,
    /// `RAW`, `TO_INDEX` or `INDEX`.
    file_type: &'static str,
    index_type: &'static str,
    size_bytes: i64,
    rows: i64,
    /// The read node that searches it first (the routing placement); `None` with no read nodes.
    owner: Option<String>,
}

#[derive(Debug, Serialize)]
struct CollectionView {
    name: String,
    dimension: i64,
    metric: &'static str,
    index_type: &'static str,
    index_params: String,
    index_file_size_bytes: i64,
    partitions: Vec<String>,
    files_total: usize,
    rows_total: i64,
    bytes_total: i64,
    /// Files per owning read node (`(none)` for files without one).
    files_by_owner: BTreeMap<String, usize>,
    /// At most `MAX_FILES_LISTED`, by id.
    files: Vec<FileView>,
    files_truncated: bool,
}

/// The `/collections` document: every collection of the snapshot with its searchable files and their
/// owners.
fn collections_json(snapshot: &Snapshot, owners: &HashMap<i64, NodeAddr>) -> serde_json::Value {
    let mut names: Vec<&String> = snapshot.collections.keys().collect();
    names.sort();
    let collections: Vec<CollectionView> = names
        .into_iter()
        .filter_map(|name| {
            let c = snapshot.collections.get(name)?;
            let table = &c.collection;
            let mut tables: Vec<(&str, &str)> = vec![(table.table_id.as_str(), "_default")];
            tables.extend(
                c.partitions
                    .iter()
                    .map(|p| (p.table_id.as_str(), p.partition_tag.as_str())),
            );
            let mut files: Vec<FileView> = tables
                .iter()
                .filter_map(|(table_id, tag)| Some((snapshot.files.get(*table_id)?, *tag)))
                .flat_map(|(rows, tag)| {
                    rows.iter().map(move |f| FileView {
                        id: f.id,
                        partition: tag.to_string(),
                        segment: f.segment_id.clone(),
                        file: f.file_id.clone(),
                        file_type: f.file_type.name(),
                        index_type: f.engine_type.name(),
                        size_bytes: f.file_size,
                        rows: f.row_count,
                        owner: owners.get(&f.id).map(|n| n.to_string()),
                    })
                })
                .collect();
            files.sort_by_key(|f| f.id);
            let mut files_by_owner = BTreeMap::new();
            for f in &files {
                let owner = f.owner.clone().unwrap_or_else(|| "(none)".to_string());
                *files_by_owner.entry(owner).or_insert(0) += 1;
            }
            let files_total = files.len();
            let rows_total = files.iter().map(|f| f.rows).sum();
            let bytes_total = files.iter().map(|f| f.size_bytes).sum();
            files.truncate(MAX_FILES_LISTED);
            Some(CollectionView {
                name: name.clone(),
                dimension: table.dimension,
                metric: table.metric_type.name(),
                index_type: table.engine_type.name(),
                index_params: table.index_params.clone(),
                index_file_size_bytes: table.index_file_size,
                partitions: c
                    .partitions
                    .iter()
                    .map(|p| p.partition_tag.clone())
                    .collect(),
                files_total,
                rows_total,
                bytes_total,
                files_by_owner,
                files_truncated: files_total > MAX_FILES_LISTED,
                files,
            })
        })
        .collect();
    json!({
        "epoch": snapshot.epoch,
        "stale": snapshot.stale,
        "max_files_listed": MAX_FILES_LISTED,
        "collections": collections,
    })
}

/// `GET /collections`: asks the metadata poller for its snapshot and the routing actor for each file's
/// owner (by message, each bounded like every admin ask).
pub async fn collections(State(s): State<Arc<AdminState>>) -> Response {
    let snapshot = match s.actors.poller.send(GetSnapshot).timeout(ASK_TIMEOUT).await {
        Ok(snapshot) => snapshot,
        Err(e) => return unavailable("metadata poller", e),
    };
    let owners = match s.actors.routing.send(GetOwners).timeout(ASK_TIMEOUT).await {
        Ok(owners) => owners,
        Err(e) => return unavailable("routing", e),
    };
    Json(collections_json(&snapshot, &owners)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // No CDN: nothing in the page or its script names another origin.
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            // The SVG namespace is a name, not a place the page loads from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for foreign in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(foreign), "{name} refers to `{foreign}`");
            }
        }
        assert!(INDEX_HTML.contains("src=\"/console/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/console/style.css\""));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script (CSP)");
    }
}
