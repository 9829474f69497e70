//! What the engine counts for the node's `/metrics` and `/readyz`: rows inserted, and per table the
//! flushes that failed and whether its flush is failing now (with the last error), so one table that
//! cannot be flushed shows up for an operator, not only in the log and to the next client that flushes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most tables whose flush outcomes are kept: past it, a table whose flush is not failing makes room
/// (tables are created by clients: the book must not grow without bound).
const MAX_TABLES: usize = 4096;

/// One table's flush record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableFlushStats {
    /// Flushes of this table that failed since the node started.
    pub failures: u64,
    /// The error of its last flush, while that flush failed (`None`: its last flush worked).
    pub failing: Option<String>,
}

#[derive(Debug, Default)]
pub struct EngineStats {
    rows_inserted: AtomicU64,
    flushes: Mutex<BTreeMap<String, TableFlushStats>>,
}

impl EngineStats {
    pub(super) fn inserted(&self, rows: usize) {
        self.rows_inserted.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(super) fn flush_failed(&self, table: &str, error: &dyn std::fmt::Display) {
        let Ok(mut book) = self.flushes.lock() else {
            return;
        };
        if !book.contains_key(table) && book.len() >= MAX_TABLES {
            let healthy = book
                .iter()
                .find(|(_, s)| s.failing.is_none())
                .map(|(t, _)| t.clone());
            if let Some(t) = healthy {
                book.remove(&t);
            }
        }
        let entry = book.entry(table.to_string()).or_default();
        entry.failures += 1;
        entry.failing = Some(error.to_string());
    }

    /// A flush of `table` worked: it is not failing any more (its failure count stays).
    pub(super) fn flush_worked(&self, table: &str) {
        if let Ok(mut book) = self.flushes.lock()
            && let Some(entry) = book.get_mut(table)
        {
            entry.failing = None;
        }
    }

    /// A table that is gone (dropped) leaves the book.
    pub(super) fn forget(&self, table: &str) {
        if let Ok(mut book) = self.flushes.lock() {
            book.remove(table);
        }
    }

    /// Rows acknowledged to inserts since the node started.
    pub fn rows_inserted(&self) -> u64 {
        self.rows_inserted.load(Ordering::Relaxed)
    }

    /// Every table with a failed flush since start, by table id.
    pub fn flushes(&self) -> BTreeMap<String, TableFlushStats> {
        self.flushes.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_fails_recovers_and_is_forgotten() {
        let stats = EngineStats::default();
        stats.flush_worked("a");
        assert!(
            stats.flushes().is_empty(),
            "a table that never failed is not listed"
        );
        stats.flush_failed("a", &"disk full");
        stats.flush_failed("a", &"disk full");
        assert_eq!(
            stats.flushes()["a"],
            TableFlushStats {
                failures: 2,
                failing: Some("disk full".into())
            }
        );
        stats.flush_worked("a");
        assert_eq!(stats.flushes()["a"].failing, None);
        assert_eq!(stats.flushes()["a"].failures, 2);
        stats.forget("a");
        assert!(stats.flushes().is_empty());
    }

    #[test]
    fn the_book_is_bounded_by_tables_that_recovered() {
        let stats = EngineStats::default();
        for i in 0..MAX_TABLES + 10 {
            let t = format!("t{i}");
            stats.flush_failed(&t, &"x");
            stats.flush_worked(&t);
        }
        assert_eq!(stats.flushes().len(), MAX_TABLES);
    }
}
