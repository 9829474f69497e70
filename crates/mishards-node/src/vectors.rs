//! A collection's vectors as they travel the write path and sit in raw segments: floats (L2, IP
//! collections) or packed bits (binary metrics, `dim / 8` bytes a row), row-major.
//!
//! A row's *width* is how many values it holds: `dim` floats, or `dim / 8` bytes.

use std::ops::Range;

/// Owned rows of one collection.
#[derive(Clone, Debug, PartialEq)]
pub enum Vectors {
    Float(Vec<f32>),
    Binary(Vec<u8>),
}

/// Borrowed rows (queries, or a segment's data).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VectorsRef<'a> {
    Float(&'a [f32]),
    Binary(&'a [u8]),
}

/// Values a row of a collection of dimension `dim` holds.
pub fn row_width(dim: usize, binary: bool) -> usize {
    if binary { dim / 8 } else { dim }
}

impl Default for Vectors {
    fn default() -> Self {
        Vectors::Float(Vec::new())
    }
}

impl Vectors {
    /// No rows, of the given kind.
    pub fn empty(binary: bool) -> Vectors {
        if binary {
            Vectors::Binary(Vec::new())
        } else {
            Vectors::Float(Vec::new())
        }
    }

    pub fn is_binary(&self) -> bool {
        matches!(self, Vectors::Binary(_))
    }

    /// Values held (floats or bytes).
    pub fn values(&self) -> usize {
        match self {
            Vectors::Float(v) => v.len(),
            Vectors::Binary(v) => v.len(),
        }
    }

    /// Bytes the values take in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Vectors::Float(v) => v.len() * 4,
            Vectors::Binary(v) => v.len(),
        }
    }

    pub fn as_ref(&self) -> VectorsRef<'_> {
        match self {
            Vectors::Float(v) => VectorsRef::Float(v),
            Vectors::Binary(v) => VectorsRef::Binary(v),
        }
    }

    /// Moves `other`'s rows to the end. Rows of the other kind are refused (and left in `other`):
    /// a collection holds one kind, checked where rows enter.
    /// Empty rows take the kind of what is appended.
    pub fn append(&mut self, other: &mut Vectors) -> Result<(), KindMismatch> {
        if self.values() == 0 && self.is_binary() != other.is_binary() {
            *self = Vectors::empty(other.is_binary());
        }
        match (self, other) {
            (Vectors::Float(a), Vectors::Float(b)) => a.append(b),
            (Vectors::Binary(a), Vectors::Binary(b)) => a.append(b),
            _ => return Err(KindMismatch),
        }
        Ok(())
    }

    /// Removes rows `rows` (of `width` values each).
    pub fn drain_rows(&mut self, rows: Range<usize>, width: usize) {
        let values = rows.start * width..rows.end * width;
        match self {
            Vectors::Float(v) => drop(v.drain(values)),
            Vectors::Binary(v) => drop(v.drain(values)),
        }
    }

    /// Appends row `row` of `src` (same kind; a row of the other kind is skipped).
    pub fn push_row_of(&mut self, src: &Vectors, row: usize, width: usize) {
        let values = row * width..(row + 1) * width;
        match (self, src) {
            (Vectors::Float(a), Vectors::Float(b)) => a.extend_from_slice(&b[values]),
            (Vectors::Binary(a), Vectors::Binary(b)) => a.extend_from_slice(&b[values]),
            _ => {}
        }
    }

    /// Row `row` alone, as owned rows.
    pub fn row(&self, row: usize, width: usize) -> Option<Vectors> {
        let values = row * width..(row + 1) * width;
        Some(match self {
            Vectors::Float(v) => Vectors::Float(v.get(values)?.to_vec()),
            Vectors::Binary(v) => Vectors::Binary(v.get(values)?.to_vec()),
        })
    }
}

impl VectorsRef<'_> {
    pub fn is_binary(&self) -> bool {
        matches!(self, VectorsRef::Binary(_))
    }

    pub fn values(&self) -> usize {
        match self {
            VectorsRef::Float(v) => v.len(),
            VectorsRef::Binary(v) => v.len(),
        }
    }

    pub fn to_owned(&self) -> Vectors {
        match self {
            VectorsRef::Float(v) => Vectors::Float(v.to_vec()),
            VectorsRef::Binary(v) => Vectors::Binary(v.to_vec()),
        }
    }
}

/// Float rows met binary ones (or the reverse) where one kind was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("float and binary vectors cannot be mixed in one collection")]
pub struct KindMismatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_move_by_width_and_kinds_never_mix() {
        let mut a = Vectors::Binary(vec![1, 2, 3, 4]);
        let mut b = Vectors::Binary(vec![5, 6]);
        a.append(&mut b).unwrap();
        assert_eq!(a, Vectors::Binary(vec![1, 2, 3, 4, 5, 6]));
        a.drain_rows(1..2, 2);
        assert_eq!(a, Vectors::Binary(vec![1, 2, 5, 6]));
        assert_eq!(a.row(1, 2), Some(Vectors::Binary(vec![5, 6])));
        assert_eq!(a.row(2, 2), None);
        let mut f = Vectors::Float(vec![1.0]);
        assert_eq!(a.append(&mut f), Err(KindMismatch));
        assert_eq!(f.values(), 1, "refused rows stay where they were");
        let mut out = Vectors::empty(true);
        out.push_row_of(&a, 0, 2);
        assert_eq!(out, Vectors::Binary(vec![1, 2]));
        assert_eq!(row_width(16, true), 2);
        assert_eq!(row_width(16, false), 16);
    }
}
