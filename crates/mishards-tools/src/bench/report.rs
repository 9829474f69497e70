//! What a run measured and how it is shown: latency percentiles, errors by kind, recall, the report as
//! text or JSON, and the insert progress line.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use mishards_common::stats::percentile;

use super::BenchConfig;
use super::client::Failure;
use super::load::{IndexSpec, Loaded, metric_name};
use super::search::RequestRecord;

/// Latency percentiles (nearest rank) over a set of requests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min: Duration,
    pub mean: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencySummary {
    pub fn from_samples(mut samples: Vec<Duration>) -> LatencySummary {
        samples.sort_unstable();
        let Some(&max) = samples.last() else {
            return LatencySummary::default();
        };
        let total: Duration = samples.iter().sum();
        LatencySummary {
            count: samples.len() as u64,
            min: samples[0],
            mean: total / samples.len() as u32,
            p50: percentile(&samples, 50.0),
            p95: percentile(&samples, 95.0),
            p99: percentile(&samples, 99.0),
            max,
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "min": ms(self.min),
            "mean": ms(self.mean),
            "p50": ms(self.p50),
            "p95": ms(self.p95),
            "p99": ms(self.p99),
            "max": ms(self.max),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Failed requests by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// By Milvus status code name, e.g. `CONNECT_FAILED`.
    pub by_status: BTreeMap<String, u64>,
    /// By gRPC code (`grpc Unavailable`), `timeout` or `malformed answer`.
    pub by_transport: BTreeMap<String, u64>,
}

impl ErrorCounts {
    pub fn add(&mut self, failure: &Failure) {
        let map = if failure.is_status() {
            &mut self.by_status
        } else {
            &mut self.by_transport
        };
        *map.entry(failure.label()).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.by_status
            .values()
            .chain(self.by_transport.values())
            .sum()
    }

    pub(super) fn merge(&mut self, other: ErrorCounts) {
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_transport {
            *self.by_transport.entry(k).or_default() += v;
        }
    }
}

/// Recall over every answered row of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecallSummary {
    pub k: usize,
    /// Answered rows compared (a query asked several times counts each time).
    pub rows: u64,
    pub mean: f64,
    pub min: f64,
    /// Rows whose ids equal the expected ones exactly, in order.
    pub same_id_rows: u64,
    pub max_distance_error: f32,
}

/// What a search load measured.
#[derive(Clone, Debug)]
pub struct SearchReport {
    pub concurrency: usize,
    pub nq: usize,
    pub topk: usize,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// From the first search sent to the last answer (warm-up excluded).
    pub elapsed: Duration,
    /// Answered searches per second.
    pub qps: f64,
    /// Over answered searches.
    pub latency: LatencySummary,
    pub errors: ErrorCounts,
    /// When expected answers were given and at least one search was answered.
    pub recall: Option<RecallSummary>,
    /// Every request, by `seq`, when `keep_records` was set.
    pub records: Vec<RequestRecord>,
}

impl SearchReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "concurrency": self.concurrency,
            "nq": self.nq,
            "topk": self.topk,
            "seconds": self.elapsed.as_secs_f64(),
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "qps": self.qps,
            "latency_ms": self.latency.to_json(),
            "errors": {
                "by_status": self.errors.by_status,
                "by_transport": self.errors.by_transport,
            },
            "recall": self.recall.map(|r| serde_json::json!({
                "k": r.k,
                "rows": r.rows,
                "mean": r.mean,
                "min": r.min,
                "same_id_rows": r.same_id_rows,
                "max_distance_error": r.max_distance_error,
            })),
        })
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub server_version: String,
    pub loaded: Loaded,
    pub search: SearchReport,
}

impl BenchReport {
    /// The report for machines (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        let nlist = match c.collection.index {
            IndexSpec::IvfFlat { nlist } => Some(nlist),
            IndexSpec::Flat => None,
        };
        let mut search = self.search.to_json();
        search["nprobe"] = serde_json::json!(c.search.nprobe);
        search["queries"] = serde_json::json!(c.queries);
        serde_json::json!({
            "endpoint": c.addr,
            "server_version": self.server_version,
            "collection": c.collection.name,
            "data": {
                "rows": c.data.rows,
                "dim": c.data.dim,
                "clusters": c.data.clusters,
                "sigma": c.data.sigma,
                "seed": c.seed,
                "metric": metric_name(c.collection.metric),
                "index": c.collection.index.name(),
                "nlist": nlist,
            },
            "load": {
                "reused": self.loaded.reused,
                "rows": self.loaded.ids.len(),
                "insert_seconds": self.loaded.insert_time.as_secs_f64(),
                "insert_rows_per_second": self.loaded.insert_rate(),
                "flush_seconds": self.loaded.flush_time.as_secs_f64(),
                "index_seconds": self.loaded.index_time.as_secs_f64(),
            },
            "search": search,
        })
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let (c, s, l) = (&self.config, &self.search, &self.loaded);
        let mut text = String::new();
        let mut line = |t: String| {
            text.push_str(&t);
            text.push('\n');
        };
        line(format!(
            "mishards bench: {} (Milvus {}), collection `{}`",
            c.addr, self.server_version, c.collection.name
        ));
        let index = match c.collection.index {
            IndexSpec::Flat => "flat".to_string(),
            IndexSpec::IvfFlat { nlist } => format!("ivf_flat, nlist {nlist}"),
        };
        line(format!(
            "data      {} × {}, {}, {} clusters (sigma {}), seed {}; index {index}",
            group(c.data.rows as u64),
            c.data.dim,
            metric_name(c.collection.metric),
            c.data.clusters,
            c.data.sigma,
            c.seed
        ));
        if l.reused {
            line(format!(
                "load      reused the existing {} rows{}",
                group(l.ids.len() as u64),
                index_note(l.index_time)
            ));
        } else {
            line(format!(
                "load      {} rows in {:.2} s ({} rows/s); flush {:.2} s{}",
                group(l.ids.len() as u64),
                l.insert_time.as_secs_f64(),
                group(l.insert_rate().round() as u64),
                l.flush_time.as_secs_f64(),
                index_note(l.index_time)
            ));
        }
        let nprobe = c
            .search
            .nprobe
            .map(|n| format!(", nprobe {n}"))
            .unwrap_or_default();
        line(format!(
            "search    {} clients, nq {}, top-{}{nprobe}, {} distinct queries, {:.2} s",
            s.concurrency,
            s.nq,
            s.topk,
            group(c.queries as u64),
            s.elapsed.as_secs_f64()
        ));
        line(format!(
            "  requests  {} ({} answered, {} failed)",
            group(s.requests),
            group(s.succeeded),
            group(s.failed)
        ));
        line(format!("  QPS       {:.1}", s.qps));
        line(format!(
            "  latency   p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(s.latency.p50),
            ms(s.latency.p95),
            ms(s.latency.p99),
            ms(s.latency.max)
        ));
        let errors: Vec<String> = s
            .errors
            .by_status
            .iter()
            .chain(&s.errors.by_transport)
            .map(|(kind, n)| format!("{kind} {}", group(*n)))
            .collect();
        line(format!(
            "  errors    {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        ));
        match s.recall {
            Some(r) => line(format!(
                "  recall@{} {:.4} (mean over {} answered queries; lowest {:.2}; {} exactly the exact top-{})",
                r.k,
                r.mean,
                group(r.rows),
                r.min,
                group(r.same_id_rows),
                r.k
            )),
            None => line(format!("  recall@{} n/a (no answer)", s.topk)),
        }
        text
    }
}

fn index_note(built: Duration) -> String {
    if built.is_zero() {
        String::new()
    } else {
        format!("; index built in {:.2} s", built.as_secs_f64())
    }
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Draws insert progress: on a terminal one line redrawn in place (`\r`) at most ten times a second;
/// elsewhere (a log, a pipe) a line at every tenth of the way.
pub struct ProgressLine {
    out: Box<dyn Write + Send>,
    terminal: bool,
    /// Set by the first update: the rate counts from the insert's start, not from construction.
    started: Option<Instant>,
    last_drawn: Option<Instant>,
    last_tenth: Option<u64>,
    open_line: bool,
}

impl ProgressLine {
    pub fn new(out: Box<dyn Write + Send>, terminal: bool) -> Self {
        ProgressLine {
            out,
            terminal,
            started: None,
            last_drawn: None,
            last_tenth: None,
            open_line: false,
        }
    }

    /// Progress is a courtesy: a failed write to it is ignored.
    pub fn update(&mut self, done: u64, total: u64) {
        let total = total.max(1);
        let percent = done.min(total) * 100 / total;
        let started = *self.started.get_or_insert_with(Instant::now);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
        if self.terminal {
            let due = self
                .last_drawn
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if !due && done < total {
                return;
            }
            let filled = (percent / 5) as usize;
            let _ = write!(
                self.out,
                "\rinserting [{}{}] {:>3} %  {} / {} rows  {} rows/s ",
                "#".repeat(filled),
                "-".repeat(20 - filled),
                percent,
                group(done),
                group(total),
                group(rate.round() as u64)
            );
            self.open_line = true;
            self.last_drawn = Some(Instant::now());
        } else {
            let tenth = done.min(total) * 10 / total;
            if self.last_tenth.is_some_and(|t| t >= tenth) {
                return;
            }
            self.last_tenth = Some(tenth);
            let _ = writeln!(
                self.out,
                "inserting: {} / {} rows ({percent} %), {} rows/s",
                group(done),
                group(total),
                group(rate.round() as u64)
            );
        }
        let _ = self.out.flush();
    }

    /// Ends the redrawn line, if one is open.
    pub fn finish(&mut self) {
        if self.open_line {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
            self.open_line = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::client::status_name;
    use std::sync::Arc;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = LatencySummary::from_samples(samples);
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p95, Duration::from_millis(95));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let one = LatencySummary::from_samples(vec![Duration::from_millis(7)]);
        assert_eq!(
            (one.p50, one.p99, one.max),
            (
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7)
            )
        );
        assert_eq!(
            LatencySummary::from_samples(Vec::new()),
            LatencySummary::default()
        );
        let sorted: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&sorted, 91.0), Duration::from_millis(10));
        assert_eq!(percentile(&sorted, 90.0), Duration::from_millis(9));
    }

    #[test]
    fn errors_are_counted_by_status_and_by_transport_kind() {
        let mut counts = ErrorCounts::default();
        counts.add(&Failure::Status {
            code: 2,
            reason: String::new(),
        });
        counts.add(&Failure::Status {
            code: 2,
            reason: String::new(),
        });
        counts.add(&Failure::Grpc {
            code: tonic::Code::Unavailable,
            message: String::new(),
        });
        counts.add(&Failure::Timeout {
            after: Duration::from_secs(1),
        });
        assert_eq!(counts.by_status.get("CONNECT_FAILED"), Some(&2));
        assert_eq!(counts.by_transport.get("grpc Unavailable"), Some(&1));
        assert_eq!(counts.by_transport.get("timeout"), Some(&1));
        assert_eq!(counts.total(), 4);
        assert_eq!(status_name(999), "code 999");
    }

    #[test]
    fn progress_writes_a_line_per_tenth_when_not_on_a_terminal() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let mut progress = ProgressLine::new(Box::new(sink.clone()), false);
        for done in (0..=1000).step_by(50) {
            progress.update(done, 1000);
        }
        progress.finish();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with("inserting: 1,000 / 1,000 rows (100 %)"),
            "{text}"
        );
        assert!(!text.contains('\r'));
        // On a terminal: redrawn in place, ended by one newline.
        let sink = Shared::default();
        let mut progress = ProgressLine::new(Box::new(sink.clone()), true);
        progress.update(0, 10);
        progress.update(10, 10);
        progress.finish();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with('\r') && text.ends_with('\n') && text.contains("100 %"),
            "{text:?}"
        );
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
