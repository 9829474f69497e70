//! One log record: `[len u32][crc32 u32][lsn u64][kind u8][payload]` (little-endian; crc over
//! lsn..payload). The payload starts with the table's name (`u32` length + UTF-8) and, for kinds with
//! [`IDENTIFIED`] set, the table's `created_on`: a table dropped and created again under the same name has
//! another `created_on`, so replay never applies the old table's records to the new one.

use crate::checked_io::{extend_le, from_le};
use crate::vectors::{Vectors, row_width};

pub(super) const HEADER_BYTES: usize = 8;
const KIND_INSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// An insert of binary rows: `dim` is in bits, each row `dim / 8` bytes.
const KIND_INSERT_BINARY: u8 = 3;
/// A table's whole buffered state logged again (see [`WalRecord::Relog`]); always identified.
const KIND_RELOG: u8 = 4;
/// One delete for several tables (see [`WalRecord::DeleteMany`]); its own table name is empty.
const KIND_DELETE_MANY: u8 = 5;
/// Set on the kind when the table's `created_on` follows its name. Logs written before it existed hold
/// records without it; those match any table of their name, as they always did.
const IDENTIFIED: u8 = 0x80;

/// One logged change.
#[derive(Debug, Clone, PartialEq)]
pub enum WalRecord {
    Insert {
        table_id: String,
        /// The table's `created_on` (`None` in records of older logs).
        created_on: Option<i64>,
        dim: u32,
        ids: Vec<i64>,
        vectors: Vectors,
    },
    Delete {
        table_id: String,
        created_on: Option<i64>,
        ids: Vec<i64>,
    },
    /// A delete for every table of a collection at once (DeleteByID without a partition tag): the ids
    /// are logged and buffered once, however many partitions the collection has.
    DeleteMany {
        /// Each table's name and `created_on`.
        tables: Vec<(String, i64)>,
        ids: Vec<i64>,
    },
    /// Everything a table had buffered, logged again at the head of the log so the files holding the
    /// original records can be dropped while the table cannot be flushed. Replay replaces what the table
    /// had buffered with it: `deleted` ids mark rows of its segments, `ids`/`vectors` are its live rows.
    Relog {
        table_id: String,
        created_on: i64,
        dim: u32,
        deleted: Vec<i64>,
        ids: Vec<i64>,
        vectors: Vectors,
    },
}

impl WalRecord {
    /// The tables the record is for, each with its `created_on` when the record says (records of
    /// older logs do not).
    pub fn tables(&self) -> Vec<(&str, Option<i64>)> {
        match self {
            WalRecord::Insert {
                table_id,
                created_on,
                ..
            }
            | WalRecord::Delete {
                table_id,
                created_on,
                ..
            } => vec![(table_id, *created_on)],
            WalRecord::Relog {
                table_id,
                created_on,
                ..
            } => vec![(table_id, Some(*created_on))],
            WalRecord::DeleteMany { tables, .. } => {
                tables.iter().map(|(t, c)| (t.as_str(), Some(*c))).collect()
            }
        }
    }

    pub(super) fn encode(&self, lsn: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.encoded_len_hint());
        body.extend_from_slice(&lsn.to_le_bytes());
        let put_head = |body: &mut Vec<u8>, kind: u8, table: &str, created_on: Option<i64>| {
            body.push(if created_on.is_some() {
                kind | IDENTIFIED
            } else {
                kind
            });
            body.extend_from_slice(&(table.len() as u32).to_le_bytes());
            body.extend_from_slice(table.as_bytes());
            if let Some(c) = created_on {
                body.extend_from_slice(&c.to_le_bytes());
            }
        };
        let put_ids = |body: &mut Vec<u8>, ids: &[i64]| {
            body.extend_from_slice(&(ids.len() as u64).to_le_bytes());
            extend_le(body, ids, i64::to_le_bytes);
        };
        let put_vectors = |body: &mut Vec<u8>, vectors: &Vectors| match vectors {
            Vectors::Float(v) => extend_le(body, v, f32::to_le_bytes),
            Vectors::Binary(v) => body.extend_from_slice(v),
        };
        match self {
            WalRecord::Insert {
                table_id,
                created_on,
                dim,
                ids,
                vectors,
            } => {
                let kind = if vectors.is_binary() {
                    KIND_INSERT_BINARY
                } else {
                    KIND_INSERT
                };
                put_head(&mut body, kind, table_id, *created_on);
                body.extend_from_slice(&dim.to_le_bytes());
                put_ids(&mut body, ids);
                put_vectors(&mut body, vectors);
            }
            WalRecord::Delete {
                table_id,
                created_on,
                ids,
            } => {
                put_head(&mut body, KIND_DELETE, table_id, *created_on);
                put_ids(&mut body, ids);
            }
            WalRecord::DeleteMany { tables, ids } => {
                put_head(&mut body, KIND_DELETE_MANY, "", None);
                body.extend_from_slice(&(tables.len() as u32).to_le_bytes());
                for (table, created_on) in tables {
                    body.extend_from_slice(&(table.len() as u32).to_le_bytes());
                    body.extend_from_slice(table.as_bytes());
                    body.extend_from_slice(&created_on.to_le_bytes());
                }
                put_ids(&mut body, ids);
            }
            WalRecord::Relog {
                table_id,
                created_on,
                dim,
                deleted,
                ids,
                vectors,
            } => {
                put_head(&mut body, KIND_RELOG, table_id, Some(*created_on));
                body.extend_from_slice(&dim.to_le_bytes());
                body.push(u8::from(vectors.is_binary()));
                put_ids(&mut body, deleted);
                put_ids(&mut body, ids);
                put_vectors(&mut body, vectors);
            }
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn encoded_len_hint(&self) -> usize {
        let (table_id, ids, bytes) = match self {
            WalRecord::Insert {
                table_id,
                ids,
                vectors,
                ..
            } => (table_id, ids.len(), vectors.bytes()),
            WalRecord::Delete { table_id, ids, .. } => (table_id, ids.len(), 0),
            WalRecord::DeleteMany { tables, ids } => {
                let names: usize = tables.iter().map(|(t, _)| t.len() + 12).sum();
                return 48 + names + ids.len() * 8;
            }
            WalRecord::Relog {
                table_id,
                deleted,
                ids,
                vectors,
                ..
            } => (table_id, deleted.len() + ids.len(), vectors.bytes()),
        };
        48 + table_id.len() + ids * 8 + bytes
    }

    /// Decodes a record body (after len and crc). `None` when it does not parse.
    pub(super) fn decode(body: &[u8]) -> Option<(u64, WalRecord)> {
        let mut r = Cursor { buf: body, pos: 0 };
        let lsn = r.u64()?;
        let kind_byte = r.take(1)?[0];
        let kind = kind_byte & !IDENTIFIED;
        let table_len = r.u32()? as usize;
        let table_id = String::from_utf8(r.take(table_len)?.to_vec()).ok()?;
        let created_on = if kind_byte & IDENTIFIED != 0 {
            Some(r.i64()?)
        } else {
            None
        };
        let record = match kind {
            KIND_INSERT | KIND_INSERT_BINARY => {
                let dim = r.u32()?;
                let ids = r.ids()?;
                let vectors = r.vectors(dim, ids.len(), kind == KIND_INSERT_BINARY)?;
                WalRecord::Insert {
                    table_id,
                    created_on,
                    dim,
                    ids,
                    vectors,
                }
            }
            KIND_DELETE => WalRecord::Delete {
                table_id,
                created_on,
                ids: r.ids()?,
            },
            KIND_DELETE_MANY if table_id.is_empty() && created_on.is_none() => {
                let n = r.u32()? as usize;
                let mut tables = Vec::new();
                for _ in 0..n {
                    let len = r.u32()? as usize;
                    let name = String::from_utf8(r.take(len)?.to_vec()).ok()?;
                    tables.push((name, r.i64()?));
                }
                WalRecord::DeleteMany {
                    tables,
                    ids: r.ids()?,
                }
            }
            KIND_RELOG => {
                let dim = r.u32()?;
                let binary = match r.take(1)?[0] {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let deleted = r.ids()?;
                let ids = r.ids()?;
                let vectors = r.vectors(dim, ids.len(), binary)?;
                WalRecord::Relog {
                    table_id,
                    created_on: created_on?,
                    dim,
                    deleted,
                    ids,
                    vectors,
                }
            }
            _ => return None,
        };
        (r.pos == body.len()).then_some((lsn, record))
    }
}

/// Reads a record body; every length is checked against what is left before anything is allocated.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    /// A count followed by that many ids.
    fn ids(&mut self) -> Option<Vec<i64>> {
        let n = usize::try_from(self.u64()?).ok()?;
        Some(from_le(self.take(n.checked_mul(8)?)?, i64::from_le_bytes))
    }
    fn vectors(&mut self, dim: u32, rows: usize, binary: bool) -> Option<Vectors> {
        let values = rows.checked_mul(row_width(dim as usize, binary))?;
        Some(if binary {
            Vectors::Binary(self.take(values)?.to_vec())
        } else {
            Vectors::Float(from_le(
                self.take(values.checked_mul(4)?)?,
                f32::from_le_bytes,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn insert(table: &str, ids: &[i64]) -> WalRecord {
        WalRecord::Insert {
            table_id: table.into(),
            created_on: Some(7),
            dim: 2,
            ids: ids.to_vec(),
            vectors: Vectors::Float(ids.iter().flat_map(|&i| [i as f32, -(i as f32)]).collect()),
        }
    }

    fn round_trip(record: &WalRecord, lsn: u64) {
        let encoded = record.encode(lsn);
        let body = &encoded[HEADER_BYTES..];
        assert_eq!(WalRecord::decode(body), Some((lsn, record.clone())));
        // Any shorter body does not decode.
        for cut in 0..body.len() {
            assert!(WalRecord::decode(&body[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn every_kind_round_trips_and_no_prefix_decodes() {
        round_trip(&insert("t", &[1, 2]), 5);
        round_trip(
            &WalRecord::Insert {
                table_id: "bin".into(),
                created_on: Some(1),
                dim: 16,
                ids: vec![7, 8],
                vectors: Vectors::Binary(vec![0xff, 0x01, 0x80, 0x00]),
            },
            9,
        );
        round_trip(
            &WalRecord::Delete {
                table_id: "t".into(),
                created_on: Some(3),
                ids: vec![4, 5],
            },
            10,
        );
        round_trip(
            &WalRecord::DeleteMany {
                tables: vec![("c".into(), 1), ("1700000000000000".into(), 2)],
                ids: vec![4, 5, 6],
            },
            12,
        );
        round_trip(
            &WalRecord::Relog {
                table_id: "t".into(),
                created_on: 3,
                dim: 2,
                deleted: vec![9],
                ids: vec![1],
                vectors: Vectors::Float(vec![1.0, 2.0]),
            },
            11,
        );
    }

    #[test]
    fn records_of_older_logs_decode_without_identity_and_match_any_table() {
        let legacy = WalRecord::Delete {
            table_id: "t".into(),
            created_on: None,
            ids: vec![1],
        };
        let encoded = legacy.encode(3);
        assert_eq!(
            encoded[HEADER_BYTES + 8],
            KIND_DELETE,
            "the kind byte of older logs"
        );
        round_trip(&legacy, 3);
        assert_eq!(legacy.tables(), [("t", None)]);
        assert_eq!(insert("t", &[1]).tables(), [("t", Some(7))]);
    }

    #[test]
    fn garbage_never_decodes() {
        assert!(WalRecord::decode(&[]).is_none());
        assert!(WalRecord::decode(&[0; 13]).is_none());
        // A count claiming more ids than the body holds allocates nothing and fails.
        let mut body = 1u64.to_le_bytes().to_vec();
        body.push(KIND_DELETE);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(b't');
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(WalRecord::decode(&body).is_none());
    }
}
