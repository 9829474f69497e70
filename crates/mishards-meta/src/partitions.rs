//! Which tables a search reads, given partition tags: Milvus 1.1 matches each tag as a regular expression
//! against the whole `partition_tag`, and `_default` names the collection's own table.
//!
//! A search's tags are bounded (count and length, checked before anything is compiled) and compiled
//! together into one `RegexSet` with a size limit, so matching a partition costs one pass over its tag
//! however many patterns the search names. Compiled sets are cached by their tag list: the same tags
//! searched again cost a lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use mishards_proto::limits::{MAX_NAME_LEN, MAX_SEARCH_PARTITION_TAGS};
use regex::{Regex, RegexSet, RegexSetBuilder};

use super::schema::CollectionTables;

/// The tag of the partition every collection has: its own `Tables` row.
pub const DEFAULT_PARTITION_TAG: &str = "_default";

/// Most memory one search's compiled tag patterns may take (regex's own default is 10 MiB a pattern).
const PATTERN_SIZE_LIMIT: usize = 8 << 20;
/// Most memory the lazy DFA matching them may cache.
const PATTERN_DFA_LIMIT: usize = 4 << 20;
/// Compiled tag lists kept for later searches.
const CACHED_TAG_LISTS: usize = 256;
/// Tags an error message quotes before it says how many more there were.
const TAGS_QUOTED: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionSelectError {
    #[error("partition tag `{tag}` is not a valid regular expression: {reason}")]
    BadPattern { tag: String, reason: String },
    #[error(
        "no partition of collection `{collection}` matches the tags {}",
        quoted(tags)
    )]
    NoMatch {
        collection: String,
        tags: Vec<String>,
    },
    #[error(
        "the search names {count} partition tags; at most {MAX_SEARCH_PARTITION_TAGS} are \
         accepted: name fewer, or match several partitions with one regular expression"
    )]
    TooManyTags { count: usize },
    #[error(
        "partition tag `{prefix}…` is {len} bytes long; a tag is at most {MAX_NAME_LEN} characters \
         (Milvus 1.1's limit)"
    )]
    TagTooLong { prefix: String, len: usize },
    #[error("partition tag {index} is empty: a tag must not be blank (Milvus 1.1's rule)")]
    EmptyTag { index: usize },
    #[error(
        "the search's partition tags compile to more than {} MiB of patterns: use fewer or \
         simpler regular expressions",
        PATTERN_SIZE_LIMIT >> 20
    )]
    PatternsTooBig,
}

/// The first few tags, and how many more there were.
fn quoted(tags: &[String]) -> String {
    let shown: Vec<&String> = tags.iter().take(TAGS_QUOTED).collect();
    match tags.len().saturating_sub(TAGS_QUOTED) {
        0 => format!("{shown:?}"),
        more => format!("{shown:?} and {more} more"),
    }
}

/// Milvus 1.1's rules for the tags of one search (ValidatePartitionTags: not blank once trimmed, at
/// most 255 characters), plus this project's bound on their number. Cheap: it runs before anything is
/// compiled, and refuses an oversized list by its length alone.
pub fn check_search_tags(tags: &[String]) -> Result<(), PartitionSelectError> {
    if tags.len() > MAX_SEARCH_PARTITION_TAGS {
        return Err(PartitionSelectError::TooManyTags { count: tags.len() });
    }
    for (index, raw) in tags.iter().enumerate() {
        let tag = raw.trim();
        if tag.is_empty() {
            return Err(PartitionSelectError::EmptyTag { index });
        }
        if tag.chars().count() > MAX_NAME_LEN {
            let prefix: String = tag.chars().take(32).collect();
            return Err(PartitionSelectError::TagTooLong {
                prefix,
                len: tag.len(),
            });
        }
    }
    Ok(())
}

/// One search's tags, compiled: whether `_default` is among them, and the other tags as one set of
/// whole-string patterns.
#[derive(Debug)]
pub struct TagPatterns {
    default: bool,
    set: Option<RegexSet>,
    tags: Vec<String>,
}

impl TagPatterns {
    /// The compiled patterns of `tags` from the cache, if they are there. Cheap enough for an actor's
    /// thread: it hashes the tags, which `check_search_tags` bounds.
    pub fn cached(tags: &[String]) -> Option<Arc<TagPatterns>> {
        let cache = cache().lock().ok()?;
        cache.entries.get(tags).cloned()
    }

    /// Checks and compiles `tags` (or takes them from the cache), and caches the result. Compiling is
    /// CPU work bounded by the limits above; callers on an async or actor thread run it on a blocking
    /// thread unless `cached` had it.
    pub fn compile(tags: &[String]) -> Result<Arc<TagPatterns>, PartitionSelectError> {
        if let Some(hit) = Self::cached(tags) {
            return Ok(hit);
        }
        check_search_tags(tags)?;
        let mut default = false;
        let mut patterns = Vec::new();
        for raw in tags {
            let tag = raw.trim();
            if tag == DEFAULT_PARTITION_TAG {
                default = true;
            } else {
                patterns.push(format!("^(?:{tag})$"));
            }
        }
        let set = if patterns.is_empty() {
            None
        } else {
            let built = RegexSetBuilder::new(&patterns)
                .size_limit(PATTERN_SIZE_LIMIT)
                .dfa_size_limit(PATTERN_DFA_LIMIT)
                .build();
            Some(built.map_err(|e| compile_error(tags, e))?)
        };
        let compiled = Arc::new(TagPatterns {
            default,
            set,
            tags: tags.to_vec(),
        });
        if let Ok(mut cache) = cache().lock() {
            cache.insert(tags.to_vec(), compiled.clone());
        }
        Ok(compiled)
    }

    /// Whether a partition with this tag is selected.
    fn matches(&self, partition_tag: &str) -> bool {
        self.set.as_ref().is_some_and(|s| s.is_match(partition_tag))
    }
}

/// Names the tag that does not compile (looked for only once the set failed), or says the set is too big.
fn compile_error(tags: &[String], error: regex::Error) -> PartitionSelectError {
    if matches!(error, regex::Error::CompiledTooBig(_)) {
        return PartitionSelectError::PatternsTooBig;
    }
    for raw in tags {
        let tag = raw.trim();
        if let Err(e) = Regex::new(&format!("^(?:{tag})$")) {
            return PartitionSelectError::BadPattern {
                tag: tag.to_string(),
                reason: e.to_string(),
            };
        }
    }
    PartitionSelectError::BadPattern {
        tag: quoted(tags),
        reason: error.to_string(),
    }
}

/// Compiled tag lists, oldest evicted first.
#[derive(Default)]
struct PatternCache {
    entries: HashMap<Vec<String>, Arc<TagPatterns>>,
    order: VecDeque<Vec<String>>,
}

impl PatternCache {
    fn insert(&mut self, tags: Vec<String>, compiled: Arc<TagPatterns>) {
        if self.entries.contains_key(&tags) {
            return;
        }
        while self.order.len() >= CACHED_TAG_LISTS {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
        self.order.push_back(tags.clone());
        self.entries.insert(tags, compiled);
    }
}

fn cache() -> &'static Mutex<PatternCache> {
    static CACHE: OnceLock<Mutex<PatternCache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// The `table_id`s to search: every table of the collection when `tags` is empty, else the collection's
/// own table for `_default` plus each partition whose tag fully matches one of the patterns.
pub fn select_tables(
    tables: &CollectionTables,
    tags: &[String],
) -> Result<Vec<String>, PartitionSelectError> {
    if tags.is_empty() {
        return Ok(all_tables(tables));
    }
    select_matching(tables, &*TagPatterns::compile(tags)?)
}

/// Every table of the collection: its own and its partitions'.
pub fn all_tables(tables: &CollectionTables) -> Vec<String> {
    std::iter::once(&tables.collection)
        .chain(&tables.partitions)
        .map(|t| t.table_id.clone())
        .collect()
}

/// `select_tables` with the tags already compiled: one pass over the partitions, nothing compiled.
pub fn select_matching(
    tables: &CollectionTables,
    patterns: &TagPatterns,
) -> Result<Vec<String>, PartitionSelectError> {
    let mut selected: Vec<String> = tables
        .partitions
        .iter()
        .filter(|p| patterns.matches(&p.partition_tag))
        .map(|p| p.table_id.clone())
        .collect();
    if patterns.default {
        selected.push(tables.collection.table_id.clone());
    }
    selected.sort();
    selected.dedup();
    if selected.is_empty() {
        return Err(PartitionSelectError::NoMatch {
            collection: tables.collection.table_id.clone(),
            tags: patterns.tags.clone(),
        });
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{MetricType, NewTable, TableRow, TableState};

    fn row(new: NewTable, id: i64) -> TableRow {
        TableRow {
            id,
            table_id: new.table_id,
            state: TableState::Normal,
            dimension: new.dimension,
            created_on: new.created_on,
            flag: 0,
            index_file_size: new.index_file_size,
            engine_type: new.engine_type,
            index_params: new.index_params,
            metric_type: new.metric_type,
            owner_table: new.owner_table,
            partition_tag: new.partition_tag,
            version: None,
            flush_lsn: 0,
        }
    }

    fn fixture() -> CollectionTables {
        let collection = row(NewTable::collection("c", 4, 1024, MetricType::L2, 0), 1);
        let partitions = ["2024-01", "2024-02", "other"]
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                // Readable table ids in place of the generated ones.
                let new = NewTable {
                    table_id: format!("c_{tag}"),
                    ..NewTable::partition(&collection, tag, 0)
                };
                row(new, i as i64 + 2)
            })
            .collect();
        CollectionTables {
            collection,
            partitions,
        }
    }

    fn select(tags: &[&str]) -> Result<Vec<String>, PartitionSelectError> {
        select_tables(
            &fixture(),
            &tags.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn no_tags_means_every_table() {
        assert_eq!(
            select(&[]).unwrap(),
            ["c", "c_2024-01", "c_2024-02", "c_other"]
        );
    }

    #[test]
    fn tags_are_whole_match_regular_expressions() {
        assert_eq!(select(&["2024-.*"]).unwrap(), ["c_2024-01", "c_2024-02"]);
        assert_eq!(
            select(&["2024"]).unwrap_err(),
            PartitionSelectError::NoMatch {
                collection: "c".into(),
                tags: vec!["2024".into()]
            }
        );
        assert_eq!(select(&["_default", "oth.r"]).unwrap(), ["c", "c_other"]);
    }

    #[test]
    fn tag_lists_are_bounded_before_anything_is_compiled() {
        let many: Vec<String> = (0..=MAX_SEARCH_PARTITION_TAGS)
            .map(|i| format!("t{i}"))
            .collect();
        let err = select_tables(&fixture(), &many).unwrap_err();
        assert_eq!(
            err,
            PartitionSelectError::TooManyTags {
                count: MAX_SEARCH_PARTITION_TAGS + 1
            }
        );
        assert!(err.to_string().contains("at most 4096"), "{err}");
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            select(&[long.as_str()]),
            Err(PartitionSelectError::TagTooLong { len: 256, .. })
        ));
        // 255 characters is within the limit (and matches nothing here).
        assert!(matches!(
            select(&["y".repeat(MAX_NAME_LEN).as_str()]),
            Err(PartitionSelectError::NoMatch { .. })
        ));
        assert_eq!(
            select(&["other", "  "]).unwrap_err(),
            PartitionSelectError::EmptyTag { index: 1 }
        );
    }

    #[test]
    fn patterns_past_the_size_limit_are_refused_and_messages_stay_short() {
        // Each counted repetition multiplies the compiled size: 255 characters of them pass 8 MiB.
        let huge = "(?:a{1000}){1000}".to_string();
        assert_eq!(
            select(&[huge.as_str()]).unwrap_err(),
            PartitionSelectError::PatternsTooBig
        );
        let many: Vec<String> = (0..100).map(|i| format!("none{i}")).collect();
        let message = select_tables(&fixture(), &many).unwrap_err().to_string();
        assert!(message.contains("and 92 more"), "{message}");
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn compiled_tags_are_cached_and_select_as_before() {
        let tags = vec!["2024-0[12]".to_string(), "_default".to_string()];
        let first = TagPatterns::compile(&tags).unwrap();
        let again = TagPatterns::cached(&tags).expect("cached after compiling");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            select_matching(&fixture(), &again).unwrap(),
            ["c", "c_2024-01", "c_2024-02"]
        );
    }

    #[test]
    fn bad_pattern_is_reported() {
        assert!(matches!(
            select(&["("]),
            Err(PartitionSelectError::BadPattern { .. })
        ));
    }
}
