//! From Consul's answer to `GET /v1/health/state/any` to what the engine
//! reasons about: a [`Snapshot`] (checks by (node, check), maintenance
//! silences, nodes whose `serfHealth` fails) and the [`Transition`]s between
//! two of them. Pure.
//!
//! Maintenance checks (`_node_maintenance`, `_service_maintenance:<id>`)
//! are silences, not failures: they never appear among the checks.
//!
//! The answer is the cluster's every check (tens of thousands in a large
//! one), so a snapshot is compact: one sorted list, and the strings that
//! repeat across checks (node and service names, service IDs, check names,
//! outputs, tags) are shared (`Arc<str>`), each stored once per snapshot.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::consul::types::{CheckStatus, HealthCheck};

/// Consul's node maintenance check ID.
pub const NODE_MAINTENANCE: &str = "_node_maintenance";
/// Prefix of Consul's service maintenance check IDs.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The Serf (node liveness) check ID.
pub const SERF_HEALTH: &str = "serfHealth";

/// Identifies a check across the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckKey {
    /// Node name.
    pub node: String,
    /// Check ID (unique per node).
    pub check_id: String,
}

impl CheckKey {
    /// A key.
    pub fn new(node: impl Into<String>, check_id: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            check_id: check_id.into(),
        }
    }

    /// Whether this is the node's `serfHealth` check.
    pub fn is_serf(&self) -> bool {
        self.check_id == SERF_HEALTH
    }
}

/// One check as observed. Strings are shared with the other checks of the
/// snapshot that carry the same text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Human name.
    pub name: Arc<str>,
    /// Current status.
    pub status: CheckStatus,
    /// Output of the last run.
    pub output: Arc<str>,
    /// Service instance ID, empty for node checks.
    pub service_id: Arc<str>,
    /// Service name, empty for node checks.
    pub service_name: Arc<str>,
    /// Service tags.
    pub tags: Arc<[Arc<str>]>,
}

/// A check's place in a snapshot: (node, check ID), and the fingerprint
/// of the answer's text it was decoded from (0 when not decoded).
#[derive(Debug, Clone)]
struct Slot {
    node: Arc<str>,
    check_id: Arc<str>,
    raw: Fingerprint,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for Slot {}

impl Slot {
    fn pair(&self) -> (&str, &str) {
        (&self.node, &self.check_id)
    }
}

/// Consul's health state, digested.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every check except maintenance checks, sorted by (node, check ID),
    /// one per key.
    checks: Vec<(Slot, Observed)>,
    /// Nodes in maintenance, with the reason.
    pub node_maintenance: BTreeMap<String, String>,
    /// Service instances in maintenance: (node, service ID) → reason.
    pub service_maintenance: BTreeMap<(String, String), String>,
    /// Entries that could not be used (no node or no check ID), for a log
    /// line.
    pub skipped: usize,
    /// Consul removed entries this token may not read
    /// (`X-Consul-Results-Filtered-By-ACLs`): a check absent from this
    /// snapshot may exist. The engine then neither resolves nor promotes
    /// what it cannot see.
    pub partial: bool,
}

/// A status change of one check between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The check.
    pub key: CheckKey,
    /// Status before (`None`: first seen).
    pub from: Option<CheckStatus>,
    /// Status after (`None`: gone).
    pub to: Option<CheckStatus>,
}

/// One entry of Consul's health answer, with only the fields the watcher
/// uses (the rest is skipped while parsing, never stored); strings are
/// borrowed from the answer where they need no unescaping.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct WireCheck<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(rename = "CheckID", borrow)]
    check_id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    status: Option<CheckStatus>,
    #[serde(borrow)]
    notes: Cow<'a, str>,
    #[serde(borrow)]
    output: Cow<'a, str>,
    #[serde(rename = "ServiceID", borrow)]
    service_id: Cow<'a, str>,
    #[serde(borrow)]
    service_name: Cow<'a, str>,
    service_tags: Option<Vec<Cow<'a, str>>>,
}

/// A fast hasher for the interner's short strings (the data comes from
/// Consul, not from an adversary): rotate, xor and multiply per 8 bytes.
#[derive(Debug, Default, Clone, Copy)]
struct QuickHasher(u64);

impl QuickHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl std::hash::Hasher for QuickHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i) | 0x100);
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        // Spread the high bits (where the multiply leaves its entropy) down.
        self.0 ^ (self.0 >> 29)
    }
}

type QuickSet<T> = HashSet<T, std::hash::BuildHasherDefault<QuickHasher>>;

/// Shares equal strings (and tag lists) within one snapshot.
#[derive(Debug, Default)]
struct Interner {
    strings: QuickSet<Arc<str>>,
    tags: QuickSet<Arc<[Arc<str>]>>,
    scratch: Vec<Arc<str>>,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    fn tags(&mut self, tags: &[Cow<'_, str>]) -> Arc<[Arc<str>]> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend(tags.iter().map(|t| self.str(t)));
        let a = match self.tags.get(scratch.as_slice()) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<[Arc<str>]> = Arc::from(scratch.as_slice());
                self.tags.insert(a.clone());
                a
            }
        };
        self.scratch = scratch;
        a
    }
}

/// Fingerprint of one entry's text in Consul's answer: its length and two
/// independent 64-bit hashes. Each hashing step is a bijection of the
/// state, so two texts of one length that differ in one 8-byte word never
/// collide; any other collision is of the order of 2^-128.
type Fingerprint = (u32, u64, u64);

fn fingerprint(bytes: &[u8]) -> Fingerprint {
    let len = bytes.len() as u64;
    let (mut a, mut b) = (len ^ 0x243F_6A88_85A3_08D3, !len);
    let mut step = |w: u64| {
        a = (a.rotate_left(26) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        b = (b.rotate_left(41) ^ w).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    };
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        step(u64::from_le_bytes(w));
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    step(u64::from_le_bytes(w));
    (len as u32, a ^ (a >> 31), b ^ (b >> 29))
}

/// Splits a JSON array into its elements' text (`None` for `null`),
/// without parsing the elements: each is parsed by serde only if its text
/// changed since the previous answer.
fn split_array(json: &[u8]) -> Result<Option<Vec<&RawValue>>, serde_json::Error> {
    serde_json::from_slice(json)
}

/// Decodes successive health answers, reusing what it decoded from the
/// previous one for every entry whose text is unchanged: only the entries
/// that changed are parsed (a few, out of tens of thousands).
#[derive(Debug, Default)]
pub struct Decoder {
    /// The last snapshot decoded.
    previous: Option<Arc<Snapshot>>,
    /// Its checks by the fingerprint of their text.
    by_text: HashMap<Fingerprint, u32, std::hash::BuildHasherDefault<QuickHasher>>,
}

impl Decoder {
    /// Decodes Consul's answer (a JSON list of checks) into a snapshot.
    pub fn decode(&mut self, json: &[u8]) -> Result<Arc<Snapshot>, serde_json::Error> {
        let Some(elements) = split_array(json)? else {
            self.previous = None;
            self.by_text.clear();
            return Ok(Arc::new(Snapshot::default()));
        };
        let mut interner = Interner::default();
        let mut b = Builder::new(elements.len(), &mut interner);
        for e in elements {
            let text = e.get();
            let raw = fingerprint(text.as_bytes());
            let known = self.previous.as_ref().zip(self.by_text.get(&raw));
            if let Some((prev, &i)) = known {
                if let Some(entry) = prev.checks.get(i as usize) {
                    b.snap.checks.push(entry.clone());
                    continue;
                }
            }
            let c: WireCheck<'_> = serde_json::from_str(text)?;
            b.add(c, raw);
        }
        let snap = Arc::new(b.finish());
        self.by_text.clear();
        self.by_text.reserve(snap.checks.len());
        for (i, (slot, _)) in snap.checks.iter().enumerate() {
            self.by_text.insert(slot.raw, i as u32);
        }
        self.previous = Some(snap.clone());
        Ok(snap)
    }
}

/// Builds a snapshot from entries in any order.
struct Builder<'i> {
    snap: Snapshot,
    interner: &'i mut Interner,
}

impl<'i> Builder<'i> {
    fn new(n: usize, interner: &'i mut Interner) -> Self {
        let mut snap = Snapshot::default();
        snap.checks.reserve(n);
        Self { snap, interner }
    }

    /// Adds one entry of Consul's answer, whose text has fingerprint `raw`.
    fn add(&mut self, c: WireCheck<'_>, raw: Fingerprint) {
        let s = &mut self.snap;
        if c.node.is_empty() || c.check_id.is_empty() {
            s.skipped += 1;
            return;
        }
        let maintenance =
            c.check_id == NODE_MAINTENANCE || c.check_id.starts_with(SERVICE_MAINTENANCE_PREFIX);
        if maintenance {
            let reason = if c.notes.is_empty() {
                c.output
            } else {
                c.notes
            };
            match c.check_id.strip_prefix(SERVICE_MAINTENANCE_PREFIX) {
                None => {
                    s.node_maintenance
                        .insert(c.node.into_owned(), reason.into_owned());
                }
                Some(service_id) => {
                    let id = if c.service_id.is_empty() {
                        service_id.to_string()
                    } else {
                        c.service_id.into_owned()
                    };
                    s.service_maintenance
                        .insert((c.node.into_owned(), id), reason.into_owned());
                }
            }
            return;
        }
        let i = &mut *self.interner;
        let slot = Slot {
            node: i.str(&c.node),
            check_id: Arc::from(&*c.check_id),
            raw,
        };
        let observed = Observed {
            name: i.str(&c.name),
            status: c.status.unwrap_or(CheckStatus::Unknown),
            output: i.str(&c.output),
            service_id: i.str(&c.service_id),
            service_name: i.str(&c.service_name),
            tags: i.tags(c.service_tags.as_deref().unwrap_or_default()),
        };
        s.checks.push((slot, observed));
    }

    /// Sorts by key; of two entries with one key, the later one stays.
    fn finish(self) -> Snapshot {
        let mut s = self.snap;
        if !s.checks.is_sorted_by(|a, b| a.0.pair() < b.0.pair()) {
            s.checks.sort_by(|a, b| a.0.pair().cmp(&b.0.pair()));
            s.checks.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        s
    }
}

impl Snapshot {
    /// Digests Consul's answer.
    pub fn from_checks(checks: &[HealthCheck]) -> Self {
        let mut interner = Interner::default();
        let mut b = Builder::new(checks.len(), &mut interner);
        for c in checks {
            b.add(
                WireCheck {
                    node: Cow::Borrowed(&c.node),
                    check_id: Cow::Borrowed(&c.check_id),
                    name: Cow::Borrowed(&c.name),
                    status: c.status,
                    notes: Cow::Borrowed(&c.notes),
                    output: Cow::Borrowed(&c.output),
                    service_id: Cow::Borrowed(&c.service_id),
                    service_name: Cow::Borrowed(&c.service_name),
                    service_tags: c
                        .service_tags
                        .as_ref()
                        .map(|t| t.iter().map(|t| Cow::Borrowed(t.as_str())).collect()),
                },
                (0, 0, 0),
            );
        }
        b.finish()
    }

    fn position(&self, key: &CheckKey) -> Result<usize, usize> {
        let want = (key.node.as_str(), key.check_id.as_str());
        self.checks.binary_search_by(|(s, _)| s.pair().cmp(&want))
    }

    /// The check `key`, if present (maintenance checks never are).
    pub fn get(&self, key: &CheckKey) -> Option<&Observed> {
        self.position(key).ok().map(|i| &self.checks[i].1)
    }

    /// Whether the check `key` is present.
    pub fn contains(&self, key: &CheckKey) -> bool {
        self.position(key).is_ok()
    }

    /// Every check as (node, check ID, observation), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Observed)> {
        self.checks.iter().map(|(s, o)| (&*s.node, &*s.check_id, o))
    }

    /// Number of checks (maintenance checks excluded).
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    /// Whether there is no check.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Whether Consul knows node `node`: it has a check (`serfHealth` at
    /// least, while its agent is a member) or is in maintenance. A node that
    /// left (its instance terminated or stopped) has neither.
    pub fn has_node(&self, node: &str) -> bool {
        if self.node_maintenance.contains_key(node) {
            return true;
        }
        let i = self.checks.partition_point(|(s, _)| &*s.node < node);
        self.checks.get(i).is_some_and(|(s, _)| &*s.node == node)
    }

    /// Whether alerts for this check are silenced by maintenance.
    pub fn silenced(&self, key: &CheckKey) -> bool {
        if self.node_maintenance.contains_key(&key.node) {
            return true;
        }
        if self.service_maintenance.is_empty() {
            return false;
        }
        self.get(key).is_some_and(|o| {
            !o.service_id.is_empty()
                && self
                    .service_maintenance
                    .contains_key(&(key.node.clone(), o.service_id.to_string()))
        })
    }

    /// Nodes whose `serfHealth` is not passing right now.
    pub fn serf_failing(&self) -> BTreeSet<String> {
        self.iter()
            .filter(|(_, id, o)| *id == SERF_HEALTH && o.status != CheckStatus::Passing)
            .map(|(node, _, _)| node.to_string())
            .collect()
    }

    /// Statuses only, for [`diff`].
    pub fn statuses(&self) -> BTreeMap<CheckKey, CheckStatus> {
        self.iter()
            .map(|(n, c, o)| (CheckKey::new(n, c), o.status))
            .collect()
    }
}

/// Decodes the list of checks with an interner.
struct Checks<'i>(&'i mut Interner);

impl<'de> serde::de::DeserializeSeed<'de> for Checks<'_> {
    type Value = Snapshot;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Snapshot, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Checks<'_> {
    type Value = Snapshot;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of health checks")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Snapshot, E> {
        Ok(Snapshot::default())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Snapshot, A::Error> {
        let mut b = Builder::new(seq.size_hint().unwrap_or(0), self.0);
        while let Some(c) = seq.next_element::<WireCheck<'de>>()? {
            b.add(c, (0, 0, 0));
        }
        Ok(b.finish())
    }
}

/// Consul's answer (a JSON list of checks) decoded straight into a
/// snapshot: each entry is parsed, digested, and never stored as a list.
impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::DeserializeSeed as _;
        Checks(&mut Interner::default()).deserialize(d)
    }
}

/// Every check whose status differs between `before` and `after`
/// (appeared, changed or gone), in key order.
pub fn diff(before: &BTreeMap<CheckKey, CheckStatus>, after: &Snapshot) -> Vec<Transition> {
    let mut out = Vec::new();
    for (node, id, o) in after.iter() {
        let key = CheckKey::new(node, id);
        let from = before.get(&key).copied();
        if from != Some(o.status) {
            out.push(Transition {
                key,
                from,
                to: Some(o.status),
            });
        }
    }
    for (k, s) in before {
        if !after.contains(k) {
            out.push(Transition {
                key: k.clone(),
                from: Some(*s),
                to: None,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn hc(node: &str, id: &str, service: &str, status: CheckStatus) -> HealthCheck {
        HealthCheck {
            node: node.into(),
            check_id: id.into(),
            name: id.into(),
            status: Some(status),
            service_id: if service.is_empty() {
                String::new()
            } else {
                format!("{service}-i-1")
            },
            service_name: service.into(),
            ..HealthCheck::default()
        }
    }

    #[test]
    fn maintenance_checks_become_silences() {
        let mut m = hc(
            "n1",
            "_service_maintenance:web-i-1",
            "web",
            CheckStatus::Critical,
        );
        m.notes = "deploying".into();
        let s = Snapshot::from_checks(&[
            hc("n1", "service:web-i-1", "web", CheckStatus::Critical),
            m,
            hc("n2", "_node_maintenance", "", CheckStatus::Critical),
            hc("n2", "serfHealth", "", CheckStatus::Critical),
            hc("", "x", "", CheckStatus::Critical),
        ]);
        assert_eq!(s.checks.len(), 2);
        assert_eq!(s.skipped, 1);
        assert!(s.silenced(&CheckKey::new("n1", "service:web-i-1")));
        assert!(s.silenced(&CheckKey::new("n2", "serfHealth")));
        assert_eq!(
            s.service_maintenance[&("n1".into(), "web-i-1".into())],
            "deploying"
        );
        assert_eq!(s.serf_failing().into_iter().collect::<Vec<_>>(), vec!["n2"]);
    }

    #[test]
    fn decoding_an_answer_equals_digesting_the_checks() {
        let mut m = hc(
            "n1",
            "_service_maintenance:web-i-1",
            "web",
            CheckStatus::Critical,
        );
        m.notes = "deploying".into();
        let mut tagged = hc("n1", "service:web-i-1", "web", CheckStatus::Warning);
        tagged.service_tags = Some(vec!["blue".into()]);
        tagged.output = "HTTP GET /health: 429".into();
        let checks = vec![
            tagged,
            m,
            hc("n2", "_node_maintenance", "", CheckStatus::Critical),
            hc("n2", "serfHealth", "", CheckStatus::Passing),
            hc("", "x", "", CheckStatus::Critical),
        ];
        let json = serde_json::to_vec(&checks).unwrap_or_default();
        let decoded: Snapshot = serde_json::from_slice(&json).unwrap_or_default();
        assert_eq!(decoded, Snapshot::from_checks(&checks));
        assert_eq!(decoded.checks.len(), 2);
        let empty: Snapshot = serde_json::from_slice(b"null").unwrap_or_default();
        assert_eq!(empty, Snapshot::default());
        assert!(serde_json::from_slice::<Snapshot>(b"{}").is_err());
    }

    #[test]
    fn the_decoder_reuses_unchanged_entries_and_parses_changed_ones() {
        let mut a = hc("n2", "service:web-i-1", "web", CheckStatus::Passing);
        a.output = "ok, \"quoted\" [x] {y}".into();
        let mut b = hc("n1", "service:web-i-1", "web", CheckStatus::Passing);
        b.output = "ok".into();
        let mut dup = b.clone();
        dup.status = Some(CheckStatus::Critical);
        let m = hc("n3", "_node_maintenance", "", CheckStatus::Critical);
        // Out of order, with a duplicate key (the later entry wins).
        let json = serde_json::to_vec_pretty(&[a.clone(), b.clone(), dup, m]).unwrap_or_default();
        let mut decoder = Decoder::default();
        let first = decoder.decode(&json).unwrap_or_default();
        let plain: Snapshot = serde_json::from_slice(&json).unwrap_or_default();
        assert_eq!(*first, plain);
        let keys: Vec<_> = first.iter().map(|(n, c, o)| (n, c, o.status)).collect();
        assert_eq!(
            keys,
            vec![
                ("n1", "service:web-i-1", CheckStatus::Critical),
                ("n2", "service:web-i-1", CheckStatus::Passing),
            ]
        );
        assert!(first.node_maintenance.contains_key("n3"));
        // Same text: the same entries, shared.
        let second = decoder.decode(&json).unwrap_or_default();
        assert_eq!(first, second);
        assert!(Arc::ptr_eq(
            &first.checks[1].1.output,
            &second.checks[1].1.output
        ));
        // One entry changed: parsed again, the others reused.
        a.status = Some(CheckStatus::Warning);
        let json = serde_json::to_vec(&[a, b]).unwrap_or_default();
        let third = decoder.decode(&json).unwrap_or_default();
        let plain: Snapshot = serde_json::from_slice(&json).unwrap_or_default();
        assert_eq!(*third, plain);
        assert_eq!(third.checks[1].1.status, CheckStatus::Warning);
        assert!(third.node_maintenance.is_empty());
        // Empty and null answers; malformed ones are errors.
        assert!(decoder.decode(b" [ ] ").unwrap_or_default().is_empty());
        assert!(decoder.decode(b"null").unwrap_or_default().is_empty());
        for bad in [
            &b"[1]"[..],
            b"[] x",
            b"{}",
            b"[{\"Node\": \"n\"}",
            b"[{\"Node\": \"n}]",
            b"[{},]",
            b"[{}}]",
            b"",
        ] {
            assert!(
                decoder.decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn diff_reports_appeared_changed_and_gone_checks() {
        let before = Snapshot::from_checks(&[
            hc("n1", "a", "web", CheckStatus::Passing),
            hc("n1", "b", "web", CheckStatus::Passing),
            hc("n1", "c", "web", CheckStatus::Critical),
        ])
        .statuses();
        let after = Snapshot::from_checks(&[
            hc("n1", "a", "web", CheckStatus::Passing),
            hc("n1", "b", "web", CheckStatus::Warning),
            hc("n2", "d", "web", CheckStatus::Passing),
        ]);
        let t = diff(&before, &after);
        let short: Vec<_> = t
            .iter()
            .map(|t| (t.key.check_id.as_str(), t.from, t.to))
            .collect();
        assert_eq!(
            short,
            vec![
                ("b", Some(CheckStatus::Passing), Some(CheckStatus::Warning)),
                ("c", Some(CheckStatus::Critical), None),
                ("d", None, Some(CheckStatus::Passing)),
            ]
        );
        assert!(diff(&after.statuses(), &after).is_empty());
    }
}
