//! `/metrics` read back as Prometheus reads it (the `prometheus-parse`
//! text parser), for the tests of the coordinator's console and of
//! `rollgate watch`.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// Every sample: (metric name, labels) to value. A histogram is folded by
/// the parser into one sample; it appears here as `NAME_count`, its
/// observations (the +Inf bucket's count).
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the text exposition `text`; panics on anything the parser or
/// this reading does not accept.
pub fn parse(text: &str) -> Samples {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => ((s.metric, labels), v),
                prometheus_parse::Value::Histogram(buckets) => {
                    let count = buckets
                        .iter()
                        .find(|b| b.less_than.is_infinite())
                        .map(|b| b.count)
                        .expect("a +Inf bucket");
                    ((format!("{}_count", s.metric), labels), count)
                }
                other => panic!("{}: unexpected {other:?}", s.metric),
            }
        })
        .collect()
}

/// The key of `name` with `labels`.
fn key(name: &str, labels: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (name.to_owned(), labels)
}

/// The sample `name{labels}`, which must be there.
pub fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let k = key(name, labels);
    *m.get(&k)
        .unwrap_or_else(|| panic!("no {name}{:?} in {:?}", k.1, m.keys()))
}

/// The sample `name{labels}`, 0 when absent (a counter not yet counted).
pub fn value(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(&key(name, labels)).copied().unwrap_or(0.0)
}

/// The sum of `name` over all its label sets.
pub fn total(m: &Samples, name: &str) -> f64 {
    m.iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}
