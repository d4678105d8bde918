//! The commit journal: when each index was committed, and the watched
//! writes that index carried. A measuring aid for benchmarks, off unless
//! [`Config::journal_kv_prefix`](super::Config::journal_kv_prefix) is set;
//! turning it on changes no answer and no timing of the server.
//!
//! A benchmark that polls sees an event some milliseconds after Consul
//! committed it, and misses states that lasted less than one poll. The
//! journal gives the moment of the commit itself (taken under the store's
//! lock, when the write's index is published) and every write of the
//! watched KV keys and every check status change, in index order, so a
//! bench can time "the health change was committed" to "the coordinator's
//! reaction was committed" exactly.

use std::time::Instant;

use super::model::Status;

/// One write of a watched KV key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCommit {
    /// The key.
    pub key: String,
    /// The index the write took (its `ModifyIndex`).
    pub index: u64,
    /// The value written.
    pub value: Vec<u8>,
}

/// One change of a check's status (output-only changes are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckCommit {
    /// The node the check is on.
    pub node: String,
    /// The check's ID.
    pub check_id: String,
    /// Its service's ID; empty for a node check.
    pub service_id: String,
    /// The new status.
    pub status: Status,
    /// The index of the change.
    pub index: u64,
}

/// What the journal holds; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    kv_prefix: String,
    /// `(index, when it was published)`, strictly increasing in index.
    commits: Vec<(u64, Instant)>,
    kv: Vec<KvCommit>,
    checks: Vec<CheckCommit>,
}

impl Journal {
    /// A journal watching KV keys under `kv_prefix`.
    pub(crate) fn new(kv_prefix: impl Into<String>) -> Journal {
        Journal {
            kv_prefix: kv_prefix.into(),
            ..Journal::default()
        }
    }

    /// Records that `index` was published now (the first publication of an
    /// index counts; a restore that rewinds the index starts a new run of
    /// increasing indexes, and older entries above it are dropped).
    pub(crate) fn committed(&mut self, index: u64) {
        if let Some(&(last, _)) = self.commits.last() {
            if index == last {
                return;
            }
            if index < last {
                self.commits.retain(|(i, _)| *i < index);
            }
        }
        self.commits.push((index, Instant::now()));
    }

    /// Records a KV write when the key is watched.
    pub(crate) fn kv_write(&mut self, key: &str, index: u64, value: &[u8]) {
        if key.starts_with(&self.kv_prefix) {
            self.kv.push(KvCommit {
                key: key.to_string(),
                index,
                value: value.to_vec(),
            });
        }
    }

    /// Records a check's status change.
    pub(crate) fn check_status(&mut self, change: CheckCommit) {
        self.checks.push(change);
    }

    /// When `index` was committed: the publication of the first index at or
    /// above it (a write's index is published when the write finishes).
    pub fn commit_time(&self, index: u64) -> Option<Instant> {
        let at = self.commits.partition_point(|(i, _)| *i < index);
        self.commits.get(at).map(|(_, t)| *t)
    }

    /// Every write of the watched keys, in index order.
    pub fn kv_writes(&self) -> &[KvCommit] {
        &self.kv
    }

    /// Every check status change, in index order.
    pub fn check_changes(&self) -> &[CheckCommit] {
        &self.checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_time_is_the_first_publication_at_or_above_the_index() {
        let mut j = Journal::new("k/");
        j.committed(3);
        j.committed(3);
        j.committed(7);
        let t3 = j.commit_time(3).expect("3 was committed");
        assert_eq!(j.commit_time(1), Some(t3), "an index below the first");
        assert_eq!(j.commit_time(5), j.commit_time(7));
        assert!(j.commit_time(7).expect("7 was committed") >= t3);
        assert_eq!(j.commit_time(8), None, "not committed yet");
        assert_eq!(j.commits.len(), 2, "a second publication is not a commit");
    }

    #[test]
    fn a_rewind_drops_the_commits_above_it() {
        let mut j = Journal::new("");
        j.committed(5);
        j.committed(9);
        j.committed(2);
        assert_eq!(
            j.commits.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn only_watched_keys_are_recorded() {
        let mut j = Journal::new("rollgate/");
        j.kv_write("rollgate/services/web/rollout", 4, b"{}");
        j.kv_write("other/key", 5, b"x");
        assert_eq!(j.kv_writes().len(), 1);
        assert_eq!(j.kv_writes()[0].index, 4);
    }
}
