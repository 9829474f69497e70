//! Search batching: concurrent searches that ask one read node the same files with the same topk and
//! parameters go to it as one `SearchInFiles` whose queries are theirs end to end, and its answer is
//! split back by rows. The node scans each file once for the whole batch instead of once per search,
//! and answers one request instead of many. Each query's hits are exactly what it would get alone:
//! a query's distances do not depend on the other queries beside it (the node's kernels compute each
//! query–vector pair the same way whatever the batch), and its top-k is its own row.
//!
//! Pure functions; the node link (node_link.rs) decides when to batch and makes the call.

use mishards_proto as proto;
use mishards_proto::limits::MAX_RESULT_ENTRIES;

/// Most query bytes (floats or binary) one batched call carries (16 MiB of vectors), so a batch never
/// makes a message much larger than its largest search.
pub const MAX_BATCH_QUERY_BYTES: usize = 16 << 20;

/// Whether two searches can share one call: the same files of the same collection, the same topk,
/// search parameters and partitions.
pub fn same_shape(a: &proto::SearchInFilesParam, b: &proto::SearchInFilesParam) -> bool {
    let (Some(pa), Some(pb)) = (&a.search_param, &b.search_param) else {
        return false;
    };
    a.file_id_array == b.file_id_array
        && pa.collection_name == pb.collection_name
        && pa.topk == pb.topk
        && pa.extra_params == pb.extra_params
        && pa.partition_tag_array == pb.partition_tag_array
}

/// The search's query count and query bytes.
fn queries(p: &proto::SearchInFilesParam) -> (usize, usize) {
    p.search_param.as_ref().map_or((0, 0), |s| {
        let bytes = s
            .query_record_array
            .iter()
            .map(|r| r.float_data.len() * 4 + r.binary_data.len())
            .sum();
        (s.query_record_array.len(), bytes)
    })
}

/// Takes the next batch off `pending`, in order: its first search, and after it every later one of the
/// same shape while the batch stays within `max_searches`, the result-size limit and
/// `MAX_BATCH_QUERY_BYTES`. `alone(item)` marks a search that must go by itself (its trace is sampled, so
/// its call carries its own `traceparent`). What is left stays in `pending`, in order.
pub fn take_batch<T>(
    pending: &mut Vec<T>,
    max_searches: usize,
    param: impl Fn(&T) -> &proto::SearchInFilesParam,
    alone: impl Fn(&T) -> bool,
) -> Vec<T> {
    if pending.is_empty() {
        return Vec::new();
    }
    let first = pending.remove(0);
    if alone(&first) || max_searches <= 1 {
        return vec![first];
    }
    let topk = param(&first)
        .search_param
        .as_ref()
        .map_or(0, |s| usize::try_from(s.topk).unwrap_or(usize::MAX));
    let (mut nq, mut bytes) = queries(param(&first));
    let mut batch = vec![first];
    let mut rest = Vec::with_capacity(pending.len());
    for item in pending.drain(..) {
        let (q, b) = queries(param(&item));
        let fits = batch.len() < max_searches
            && !alone(&item)
            && same_shape(param(&batch[0]), param(&item))
            && (nq + q).saturating_mul(topk) <= MAX_RESULT_ENTRIES
            && bytes + b <= MAX_BATCH_QUERY_BYTES;
        if fits {
            nq += q;
            bytes += b;
            batch.push(item);
        } else {
            rest.push(item);
        }
    }
    *pending = rest;
    batch
}

/// One request carrying every search's queries in order, and how many queries each brought.
pub fn combine(
    searches: Vec<proto::SearchInFilesParam>,
) -> (proto::SearchInFilesParam, Vec<usize>) {
    let mut searches = searches.into_iter();
    let Some(mut combined) = searches.next() else {
        return (proto::SearchInFilesParam::default(), Vec::new());
    };
    let mut rows = vec![queries(&combined).0];
    for mut search in searches {
        let records = search
            .search_param
            .as_mut()
            .map(|s| std::mem::take(&mut s.query_record_array))
            .unwrap_or_default();
        rows.push(records.len());
        if let Some(param) = combined.search_param.as_mut() {
            param.query_record_array.extend(records);
        }
    }
    (combined, rows)
}

/// Undoes `combine`: each search's own request again, from the combined one and its `rows`. Used when
/// a batched call is refused, so each search is asked alone and a bad one fails only itself.
pub fn separate(
    mut combined: proto::SearchInFilesParam,
    rows: &[usize],
) -> Vec<proto::SearchInFilesParam> {
    let records = combined
        .search_param
        .as_mut()
        .map(|s| std::mem::take(&mut s.query_record_array))
        .unwrap_or_default();
    let mut records = records.into_iter();
    rows.iter()
        .map(|&n| {
            let mut one = combined.clone();
            if let Some(param) = one.search_param.as_mut() {
                param.query_record_array = records.by_ref().take(n).collect();
            }
            one
        })
        .collect()
}

/// Splits the answer to a combined request into one answer per search (`rows` from `combine`). An
/// error status, or an answer over no data, is every search's answer; rows that do not add up are a
/// misbehaving node, which the caller treats as a failed call.
pub fn split(
    answer: proto::TopKQueryResult,
    rows: &[usize],
) -> Result<Vec<proto::TopKQueryResult>, String> {
    let failed = answer.status.as_ref().is_some_and(|s| s.error_code != 0);
    if failed || (answer.row_num == 0 && answer.ids.is_empty()) {
        return Ok(vec![answer; rows.len()]);
    }
    let total: usize = rows.iter().sum();
    if answer.row_num != total as i64 {
        return Err(format!(
            "the node answered {} rows for a batch of {total} queries",
            answer.row_num
        ));
    }
    if total == 0
        || !answer.ids.len().is_multiple_of(total)
        || answer.distances.len() != answer.ids.len()
    {
        return Err(format!(
            "the node answered {} ids and {} distances for {total} queries",
            answer.ids.len(),
            answer.distances.len()
        ));
    }
    let k = answer.ids.len() / total;
    let mut start = 0;
    Ok(rows
        .iter()
        .map(|&n| {
            let span = start * k..(start + n) * k;
            start += n;
            proto::TopKQueryResult {
                status: answer.status.clone(),
                row_num: n as i64,
                ids: answer.ids[span.clone()].to_vec(),
                distances: answer.distances[span].to_vec(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(files: &[&str], topk: i64, nq: usize, first: f32) -> proto::SearchInFilesParam {
        proto::SearchInFilesParam {
            file_id_array: files.iter().map(|f| f.to_string()).collect(),
            search_param: Some(proto::SearchParam {
                collection_name: "c".into(),
                topk,
                query_record_array: (0..nq)
                    .map(|i| proto::RowRecord {
                        float_data: vec![first + i as f32; 4],
                        ..Default::default()
                    })
                    .collect(),
                extra_params: vec![proto::KeyValuePair {
                    key: "params".into(),
                    value: "{\"nprobe\": 16}".into(),
                }],
                ..Default::default()
            }),
        }
    }

    fn firsts(p: &proto::SearchInFilesParam) -> Vec<f32> {
        p.search_param
            .as_ref()
            .unwrap()
            .query_record_array
            .iter()
            .map(|r| r.float_data[0])
            .collect()
    }

    #[test]
    fn only_searches_of_the_same_shape_share_a_call() {
        let base = search(&["1", "2"], 10, 1, 0.0);
        assert!(same_shape(&base, &search(&["1", "2"], 10, 3, 9.0)));
        assert!(!same_shape(&base, &search(&["2", "1"], 10, 1, 0.0)));
        assert!(!same_shape(&base, &search(&["1", "2"], 11, 1, 0.0)));
        let mut other_params = base.clone();
        other_params.search_param.as_mut().unwrap().extra_params[0].value =
            "{\"nprobe\": 8}".into();
        assert!(!same_shape(&base, &other_params));
        let mut other_tags = base.clone();
        other_tags
            .search_param
            .as_mut()
            .unwrap()
            .partition_tag_array = vec!["p".into()];
        assert!(!same_shape(&base, &other_tags));
        let mut other_collection = base.clone();
        other_collection
            .search_param
            .as_mut()
            .unwrap()
            .collection_name = "d".into();
        assert!(!same_shape(&base, &other_collection));
        let missing = proto::SearchInFilesParam {
            search_param: None,
            ..base.clone()
        };
        assert!(!same_shape(&missing, &missing));
    }

    #[test]
    fn a_batch_takes_what_fits_in_order_and_leaves_the_rest_in_order() {
        let mut pending = vec![
            (search(&["1"], 10, 1, 0.0), false),
            (search(&["2"], 10, 1, 1.0), false),
            (search(&["1"], 10, 2, 2.0), false),
            (search(&["1"], 10, 1, 4.0), true),
            (search(&["1"], 10, 1, 5.0), false),
            (search(&["1"], 10, 1, 6.0), false),
        ];
        let batch = take_batch(&mut pending, 3, |s| &s.0, |s| s.1);
        let got: Vec<Vec<f32>> = batch.iter().map(|s| firsts(&s.0)).collect();
        assert_eq!(got, vec![vec![0.0], vec![2.0, 3.0], vec![5.0]]);
        let left: Vec<f32> = pending.iter().map(|s| firsts(&s.0)[0]).collect();
        assert_eq!(left, vec![1.0, 4.0, 6.0]);
        // A search marked alone goes by itself even first in line.
        let mut pending = vec![
            (search(&["1"], 10, 1, 4.0), true),
            (search(&["1"], 10, 1, 5.0), false),
        ];
        assert_eq!(take_batch(&mut pending, 8, |s| &s.0, |s| s.1).len(), 1);
        assert_eq!(pending.len(), 1);
        // Batching off.
        let mut pending = vec![
            (search(&["1"], 10, 1, 0.0), false),
            (search(&["1"], 10, 1, 1.0), false),
        ];
        assert_eq!(take_batch(&mut pending, 1, |s| &s.0, |s| s.1).len(), 1);
        let mut empty: Vec<(proto::SearchInFilesParam, bool)> = Vec::new();
        assert!(take_batch(&mut empty, 8, |s| &s.0, |s| s.1).is_empty());
    }

    #[test]
    fn a_batch_stays_within_the_result_size_limit() {
        // Each search: 2048 queries × topk 4096 = 8 Mi entries; a third would pass 16 Mi.
        let topk = 4096;
        let mut pending: Vec<proto::SearchInFilesParam> = (0..3)
            .map(|i| search(&["1"], topk, 2048, i as f32))
            .collect();
        assert_eq!(take_batch(&mut pending, 64, |s| s, |_| false).len(), 2);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn split_gives_each_search_its_own_rows_of_the_combined_answer() {
        let (combined, rows) = combine(vec![
            search(&["1"], 2, 1, 0.0),
            search(&["1"], 2, 2, 1.0),
            search(&["1"], 2, 1, 3.0),
        ]);
        assert_eq!(rows, vec![1, 2, 1]);
        assert_eq!(firsts(&combined), vec![0.0, 1.0, 2.0, 3.0]);
        // The node's answer: row r holds ids 10r, 10r+1.
        let answer = proto::TopKQueryResult {
            status: None,
            row_num: 4,
            ids: (0..4).flat_map(|r| [10 * r, 10 * r + 1]).collect(),
            distances: (0..8).map(|d| d as f32).collect(),
        };
        let parts = split(answer, &rows).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!((parts[0].row_num, parts[0].ids.clone()), (1, vec![0, 1]));
        assert_eq!(
            (parts[1].row_num, parts[1].ids.clone()),
            (2, vec![10, 11, 20, 21])
        );
        assert_eq!(parts[1].distances, vec![2.0, 3.0, 4.0, 5.0]);
        assert_eq!((parts[2].row_num, parts[2].ids.clone()), (1, vec![30, 31]));
    }

    #[test]
    fn separate_gives_back_each_search_as_it_was() {
        let searches = vec![
            search(&["1"], 2, 1, 0.0),
            search(&["1"], 2, 2, 1.0),
            search(&["1"], 2, 1, 3.0),
        ];
        let (combined, rows) = combine(searches.clone());
        assert_eq!(separate(combined, &rows), searches);
    }

    #[test]
    fn errors_and_empty_answers_go_to_every_search_and_bad_shapes_are_refused() {
        let rows = [1, 2];
        let refusal = proto::TopKQueryResult {
            status: Some(mishards_proto::error::status(
                proto::ErrorCode::FileNotFound,
                "gone",
            )),
            ..Default::default()
        };
        let parts = split(refusal.clone(), &rows).unwrap();
        assert_eq!(parts, vec![refusal.clone(), refusal]);
        let empty = proto::TopKQueryResult::default();
        assert_eq!(
            split(empty.clone(), &rows).unwrap(),
            vec![empty.clone(), empty]
        );
        let short = proto::TopKQueryResult {
            row_num: 2,
            ids: vec![1, 2],
            distances: vec![0.0, 0.0],
            ..Default::default()
        };
        assert!(
            split(short, &rows)
                .unwrap_err()
                .contains("2 rows for a batch of 3")
        );
        let ragged = proto::TopKQueryResult {
            row_num: 3,
            ids: vec![1, 2, 3, 4],
            distances: vec![0.0; 4],
            ..Default::default()
        };
        assert!(split(ragged, &rows).is_err());
        let unpaired = proto::TopKQueryResult {
            row_num: 3,
            ids: vec![1, 2, 3],
            distances: vec![0.0; 2],
            ..Default::default()
        };
        assert!(split(unpaired, &rows).is_err());
    }
}
