//! The write buffer: inserts and deletes the write-ahead log holds but no segment file does yet,
//! per table, in log order; and the automatic ids handed to inserts without ids.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::NodeError;
use crate::vectors::Vectors;
use crate::wal::WalRecord;
use mishards_meta::now_micros;

/// Inserts and deletes not yet flushed, per table, each tagged with the lsn of its log record (so a
/// record whose log write failed can be taken back out).
#[derive(Default)]
pub(super) struct MemTable {
    /// The `created_on` of the table the records were written for (`None` for records of older logs):
    /// a flush writes them only into that table, never into one created later under the same name.
    pub(super) created_on: Option<i64>,
    /// Values a row holds (see `vectors::row_width`).
    width: usize,
    ids: Vec<i64>,
    vectors: Vectors,
    /// (lsn, first row) of each logged insert, in lsn order.
    inserts: Vec<(u64, usize)>,
    /// Logged deletes, in lsn order. At the flush they remove the buffered rows logged before them and
    /// mark the rows in the table's flushed segments.
    /// The ids are shared by every table one DeleteByID reached.
    deletes: Vec<(u64, Arc<[i64]>)>,
}

impl MemTable {
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.deletes.is_empty()
    }

    /// The lsn of the oldest record buffered.
    pub(super) fn first_lsn(&self) -> Option<u64> {
        let insert = self.inserts.first().map(|i| i.0);
        let delete = self.deletes.first().map(|d| d.0);
        insert.into_iter().chain(delete).min()
    }

    /// Memory the buffered records hold.
    pub(super) fn bytes(&self) -> usize {
        let deleted: usize = self.deletes.iter().map(|(_, ids)| ids.len()).sum();
        self.vectors.bytes() + (self.ids.len() + deleted) * 8
    }

    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// The collection's dimension (bits for binary rows).
    pub(super) fn dim(&self) -> usize {
        if self.vectors.is_binary() {
            self.width * 8
        } else {
            self.width
        }
    }

    /// Buffers a logged insert. Rows of the other kind than the table's (which its writer checked
    /// against the collection) are dropped with an error in the log rather than mixed in.
    pub(super) fn push_insert(&mut self, lsn: u64, ids: Vec<i64>, mut vectors: Vectors) {
        if let Err(e) = self.vectors.append(&mut vectors) {
            tracing::error!(lsn, error = %e, "logged insert skipped");
            return;
        }
        self.inserts.push((lsn, self.ids.len()));
        self.ids.extend(ids);
    }

    /// Takes out what the record `lsn` added (its log write failed, its writer was told so).
    pub(super) fn discard(&mut self, lsn: u64) {
        self.deletes.retain(|(l, _)| *l != lsn);
        let Some(pos) = self.inserts.iter().position(|(l, _)| *l == lsn) else {
            return;
        };
        let start = self.inserts[pos].1;
        let end = self.inserts.get(pos + 1).map_or(self.ids.len(), |c| c.1);
        self.ids.drain(start..end);
        self.vectors.drain_rows(start..end, self.width);
        self.inserts.remove(pos);
        for chunk in &mut self.inserts[pos..] {
            chunk.1 -= end - start;
        }
    }

    /// The rows to flush: the buffered rows but those a delete logged after them removed.
    pub(super) fn live_rows(&self) -> (Cow<'_, [i64]>, Cow<'_, Vectors>) {
        if self.deletes.is_empty() {
            return (Cow::Borrowed(&self.ids), Cow::Borrowed(&self.vectors));
        }
        let mut last_delete: HashMap<i64, u64> = HashMap::new();
        for (lsn, ids) in &self.deletes {
            for id in ids.iter() {
                last_delete.insert(*id, *lsn); // in lsn order: the last one wins
            }
        }
        let (mut ids, mut vectors) = (Vec::new(), Vectors::empty(self.vectors.is_binary()));
        for (chunk, (lsn, start)) in self.inserts.iter().enumerate() {
            let end = self.inserts.get(chunk + 1).map_or(self.ids.len(), |c| c.1);
            for row in *start..end {
                let id = self.ids[row];
                if last_delete.get(&id).is_some_and(|deleted| deleted > lsn) {
                    continue;
                }
                ids.push(id);
                vectors.push_row_of(&self.vectors, row, self.width);
            }
        }
        (Cow::Owned(ids), Cow::Owned(vectors))
    }

    /// Every id deleted since the last flush, sorted, once each.
    pub(super) fn deleted_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .deletes
            .iter()
            .flat_map(|(_, ids)| ids.iter())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Puts back what a failed flush took, ahead of anything buffered since (which is logged later).
    pub(super) fn restore(&mut self, mut older: MemTable) {
        let offset = older.ids.len();
        older
            .inserts
            .extend(self.inserts.drain(..).map(|(lsn, row)| (lsn, row + offset)));
        older.ids.append(&mut self.ids);
        if let Err(e) = older.vectors.append(&mut self.vectors) {
            tracing::error!(error = %e, "buffered rows of another kind dropped");
        }
        older.deletes.append(&mut self.deletes);
        older.width = older.width.max(self.width);
        older.created_on = older.created_on.or(self.created_on);
        *self = older;
    }

    /// The whole buffered state as one record (see [`WalRecord::Relog`]).
    pub(super) fn relog(&self, table_id: &str, created_on: i64, dim: u32) -> WalRecord {
        let (ids, vectors) = self.live_rows();
        WalRecord::Relog {
            table_id: table_id.to_string(),
            created_on,
            dim,
            deleted: self.deleted_ids(),
            ids: ids.into_owned(),
            vectors: vectors.into_owned(),
        }
    }
}

#[derive(Default)]
pub(super) struct Buffers {
    pub(super) tables: HashMap<String, MemTable>,
    pub(super) last_id: i64,
}

/// Ids for `n` new rows: increasing, and past the clock (microseconds × 1000) so they stay unique
/// across restarts without being stored.
pub(super) fn next_ids(b: &mut Buffers, n: usize) -> Result<Vec<i64>, NodeError> {
    let first = b
        .last_id
        .saturating_add(1)
        .max(now_micros().saturating_mul(1000));
    let last = first
        .checked_add(n as i64 - 1)
        .filter(|l| *l < i64::MAX)
        .ok_or_else(|| {
            NodeError::InvalidVectorId(
                "automatic ids are exhausted: ids given earlier reach the largest id; give ids"
                    .into(),
            )
        })?;
    b.last_id = last;
    Ok((first..=last).collect())
}

/// Applies a logged change to the in-memory buffers (on the write path and on replay alike).
pub(super) fn apply_record(b: &mut Buffers, lsn: u64, record: WalRecord, width: usize) {
    if let WalRecord::Insert { ids, .. } | WalRecord::Relog { ids, .. } = &record {
        b.last_id = b.last_id.max(ids.iter().copied().max().unwrap_or(0));
    }
    match record {
        WalRecord::Insert {
            table_id,
            created_on,
            ids,
            vectors,
            ..
        } => {
            if let Some(mem) = table_buffer(b, &table_id, created_on, lsn, width) {
                mem.push_insert(lsn, ids, vectors);
            }
        }
        WalRecord::Delete {
            table_id,
            created_on,
            ids,
        } => {
            if let Some(mem) = table_buffer(b, &table_id, created_on, lsn, width) {
                mem.deletes.push((lsn, ids.into()));
            }
        }
        WalRecord::DeleteMany { tables, ids } => {
            let ids: Arc<[i64]> = ids.into();
            for (table_id, created_on) in tables {
                if let Some(mem) = table_buffer(b, &table_id, Some(created_on), lsn, width) {
                    mem.deletes.push((lsn, ids.clone()));
                }
            }
        }
        WalRecord::Relog {
            table_id,
            created_on,
            deleted,
            ids,
            vectors,
            ..
        } => {
            if let Some(mem) = table_buffer(b, &table_id, Some(created_on), lsn, width) {
                // Replaces every record of the table before it, which it sums up.
                *mem = MemTable {
                    created_on: Some(created_on),
                    width,
                    vectors: Vectors::empty(vectors.is_binary()),
                    ..MemTable::default()
                };
                if !deleted.is_empty() {
                    mem.deletes.push((lsn, deleted.into()));
                }
                if !ids.is_empty() {
                    mem.push_insert(lsn, ids, vectors);
                }
            }
        }
    }
}

/// The buffer a record for `table_id` (created at `created_on`) goes to; `None` when the record is
/// for an older table of that name, which was dropped (a writer raced the drop).
fn table_buffer<'b>(
    b: &'b mut Buffers,
    table_id: &str,
    created_on: Option<i64>,
    lsn: u64,
    width: usize,
) -> Option<&'b mut MemTable> {
    let mem = b.tables.entry(table_id.to_string()).or_default();
    if let (Some(have), Some(new)) = (mem.created_on, created_on)
        && have != new
    {
        if new < have {
            tracing::warn!(
                table = table_id,
                lsn,
                "a write for a dropped table of this name is not buffered"
            );
            return None;
        }
        *mem = MemTable::default();
    }
    mem.created_on = created_on.or(mem.created_on);
    mem.width = width;
    Some(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_table(width: usize) -> MemTable {
        MemTable {
            width,
            ..MemTable::default()
        }
    }

    #[test]
    fn a_delete_removes_only_buffered_rows_logged_before_it() {
        let mut m = mem_table(1);
        m.push_insert(1, vec![10, 11], Vectors::Float(vec![1.0, 1.1]));
        m.deletes.push((2, vec![10, 12].into()));
        m.push_insert(3, vec![10, 12], Vectors::Float(vec![2.0, 2.2]));
        let (ids, vectors) = m.live_rows();
        assert_eq!(&ids[..], [11, 10, 12]);
        assert_eq!(*vectors, Vectors::Float(vec![1.1, 2.0, 2.2]));
        assert_eq!(m.deleted_ids(), [10, 12]);
    }

    #[test]
    fn discarding_a_record_takes_out_exactly_its_rows() {
        let mut m = mem_table(2);
        m.push_insert(1, vec![1], Vectors::Float(vec![1.0, 1.0]));
        m.push_insert(2, vec![2, 3], Vectors::Float(vec![2.0, 2.0, 3.0, 3.0]));
        m.deletes.push((3, vec![1].into()));
        m.push_insert(4, vec![4], Vectors::Float(vec![4.0, 4.0]));
        m.discard(2);
        m.discard(3);
        m.discard(99);
        assert_eq!(m.ids, [1, 4]);
        assert_eq!(m.vectors, Vectors::Float(vec![1.0, 1.0, 4.0, 4.0]));
        assert_eq!(m.inserts, [(1, 0), (4, 1)]);
        assert!(m.deletes.is_empty());
        m.discard(4);
        m.discard(1);
        assert!(m.is_empty());
    }

    #[test]
    fn a_restored_buffer_keeps_log_order() {
        let mut older = mem_table(1);
        older.push_insert(1, vec![1, 2], Vectors::Float(vec![1.0, 2.0]));
        older.deletes.push((2, vec![5].into()));
        let mut newer = mem_table(1);
        newer.push_insert(3, vec![5], Vectors::Float(vec![5.0]));
        newer.deletes.push((4, vec![1].into()));
        newer.restore(older);
        assert_eq!(newer.inserts, [(1, 0), (3, 2)]);
        let (ids, _) = newer.live_rows();
        assert_eq!(
            &ids[..],
            [2, 5],
            "5 was inserted after its delete, 1 deleted after its insert"
        );
        newer.discard(3);
        assert_eq!(newer.ids, [1, 2]);
    }
}
