//! Comparing answers with the expected ones: recall of a row, exactness of ids and distances, and the
//! check of a whole search request.

use mishards_node::index::TopK;

use super::search::Answer;

/// Fraction of the expected hits (padding -1 excluded) that `found` holds, in any order; 1 when
/// nothing was expected.
pub fn recall(found: &[i64], expected: &[i64]) -> f64 {
    let mut sorted: Vec<i64> = found.to_vec();
    sorted.sort_unstable();
    let wanted = expected.iter().filter(|id| **id >= 0);
    let (mut hits, mut total) = (0usize, 0usize);
    for id in wanted {
        total += 1;
        hits += usize::from(sorted.binary_search(id).is_ok());
    }
    if total == 0 {
        1.0
    } else {
        hits as f64 / total as f64
    }
}

/// How one answered row compares with its expected row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowCheck {
    pub recall: f64,
    /// The same ids in the same order (padding included).
    pub same_ids: bool,
    /// Largest |found − expected| distance over positions holding the same id.
    pub max_distance_error: f32,
}

/// Compares an answered row with the expected one (both best first; pass the expected top-k only).
pub fn check_row(
    found_ids: &[i64],
    found_distances: &[f32],
    expected_ids: &[i64],
    expected_distances: &[f32],
) -> RowCheck {
    let max_distance_error = found_ids
        .iter()
        .zip(found_distances)
        .zip(expected_ids.iter().zip(expected_distances))
        .filter(|((f, _), (e, _))| f == e && **f >= 0)
        .map(|((_, fd), (_, ed))| (fd - ed).abs())
        .fold(0.0f32, f32::max);
    RowCheck {
        recall: recall(found_ids, expected_ids),
        same_ids: found_ids == expected_ids,
        max_distance_error,
    }
}

/// How one search compared with the expected answers, over its rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestCheck {
    /// Mean recall over the request's rows.
    pub recall: f64,
    /// The lowest recall of one of its rows.
    pub min_recall: f64,
    /// Rows whose ids equal the expected ones exactly, in order.
    pub same_id_rows: usize,
    pub max_distance_error: f32,
}

/// Compares every row of an answer with the expected top-`topk` of its query.
pub fn check_answer(
    answer: &Answer,
    queries: &[usize],
    expected: &TopK,
    topk: usize,
) -> RequestCheck {
    let k = topk.min(expected.k);
    let mut check = RequestCheck {
        recall: 0.0,
        min_recall: 1.0,
        same_id_rows: 0,
        max_distance_error: 0.0,
    };
    for (row, q) in queries.iter().enumerate() {
        let expected_ids = expected.row_ids(*q);
        let expected_distances = expected.row_distances(*q);
        let c = check_row(
            answer.row_ids(row),
            answer.row_distances(row),
            &expected_ids[..k.min(expected_ids.len())],
            &expected_distances[..k.min(expected_distances.len())],
        );
        check.recall += c.recall;
        check.min_recall = check.min_recall.min(c.recall);
        check.same_id_rows += usize::from(c.same_ids);
        check.max_distance_error = check.max_distance_error.max(c.max_distance_error);
    }
    check.recall /= queries.len().max(1) as f64;
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use mishards_node::index::Metric;

    #[test]
    fn recall_counts_expected_hits_found_in_any_order() {
        assert_eq!(recall(&[1, 2, 3, 4], &[4, 3, 2, 1]), 1.0);
        assert_eq!(recall(&[1, 2, 9, 8], &[1, 2, 3, 4]), 0.5);
        assert_eq!(recall(&[], &[1, 2]), 0.0);
        // Padding is not a hit to find; nothing expected means nothing missed.
        assert_eq!(recall(&[5, -1, -1], &[5, -1, -1]), 1.0);
        assert_eq!(recall(&[-1], &[-1]), 1.0);
        // A duplicate in the answer does not count twice.
        assert_eq!(recall(&[1, 1, 1], &[1, 2, 3]), 1.0 / 3.0);
        let c = check_row(&[1, 2, 3], &[0.1, 0.2, 0.35], &[1, 2, 3], &[0.1, 0.2, 0.3]);
        assert!(c.same_ids && c.recall == 1.0);
        assert!((c.max_distance_error - 0.05).abs() < 1e-6);
        let c = check_row(&[2, 1, 3], &[0.1, 0.2, 0.3], &[1, 2, 3], &[0.1, 0.2, 0.3]);
        assert!(!c.same_ids && c.recall == 1.0);
        // A short row is not the expected answer.
        let c = check_row(&[1, 2], &[0.1, 0.2], &[1, 2, 3], &[0.1, 0.2, 0.3]);
        assert!(!c.same_ids && (c.recall - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_answer_is_checked_row_by_row_against_its_queries() {
        let expected = TopK {
            nq: 3,
            k: 3,
            ids: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            distances: vec![0.0; 9],
            metric: Metric::L2,
        };
        let answer = Answer {
            nq: 2,
            k: 2,
            ids: vec![7, 8, 4, 9],
            distances: vec![0.0; 4],
        };
        // Rows ask queries 2 and 1 (top-2): row 0 exact, row 1 half.
        let c = check_answer(&answer, &[2, 1], &expected, 2);
        assert_eq!(c.same_id_rows, 1);
        assert_eq!(c.min_recall, 0.5);
        assert_eq!(c.recall, 0.75);
    }
}
