//! Configuration: built-in defaults < a TOML file < environment variables.
//!
//! Sources, lowest precedence first:
//!
//! 1. the defaults written in this module (every `Default` impl below);
//! 2. the TOML file given with `--config PATH` (default
//!    `/etc/rollgate/rollgate.toml`; a missing *default* file is fine, a
//!    missing file named explicitly is an error);
//! 3. Consul's own variables, as every Consul tool honours them:
//!    `CONSUL_HTTP_ADDR` (`host:port` or a URL), `CONSUL_HTTP_SSL`,
//!    `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`;
//! 4. `ROLLGATE_<SECTION>__<KEY>` (for example `ROLLGATE_CONSUL__TIMEOUT=5s`),
//!    the most specific source, so it wins over Consul's generic variables.
//!
//! Unknown keys are errors in every source (a typo must not silently fall back
//! to a default). Problems are collected, not returned one by one: an operator
//! fixing a file sees every mistake in one run, each with its key path, value
//! and the rule it breaks. Secrets are [`Secret`]s: they can be read by the code
//! that needs them but never printed, logged or serialised.
//!
//! This module never performs I/O beyond reading the configuration file and
//! checking that the files it names are readable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::consul::permissions::Role;
use crate::coordinator::config::{
    CoordinatorConfig, ServiceConfig, validate_for_coordinator, validate_services,
};
use crate::node::config::AgentConfig;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rollgate/rollgate.toml";

/// Prefix of rollgate's own environment variables.
const ENV_PREFIX: &str = "ROLLGATE_";

/// Environment variables with the prefix that are not configuration keys.
/// `ROLLGATE_CONFIG` names the file itself (read by the CLI).
const ENV_NOT_KEYS: &[&str] = &["ROLLGATE_CONFIG"];

/// The whole configuration of one `rollgate` process.
///
/// Every subcommand reads the same file, so an operator keeps one file per
/// host; sections a subcommand does not use are still validated.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach Consul: the registry, health source, lock service and
    /// state store of every rollgate component.
    pub consul: ConsulConfig,
    /// Log output.
    pub log: LogConfig,
    /// The node agent (`rollgate agent`).
    pub agent: AgentConfig,
    /// Notifications: receivers (Slack, email), routes, the outbox's retry
    /// and fallback.
    pub notify: crate::notify::config::NotifyConfig,
    /// The health watcher: thresholds, grouping, meta-alerts.
    pub watch: crate::alerting::config::WatcherConfig,
    /// The coordinator daemon (`rollgate coordinator`).
    pub coordinator: CoordinatorConfig,
    /// The services the coordinator rolls out (`[[services]]`).
    pub services: Vec<ServiceConfig>,
    /// The coordinator's console: HTTP API and `/metrics` (`[http]`).
    pub http: crate::console::config::HttpConfig,
}

/// How to reach the Consul HTTP API.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// Base URL of the Consul HTTP API (`http://host:port` or
    /// `https://host:port`); `host:port` is accepted and means `http://`
    /// (or `https://` when `CONSUL_HTTP_SSL` is true). On a node this is the
    /// local Consul agent.
    pub address: String,
    /// ACL token sent in `X-Consul-Token`. Prefer `token_file`: a token in a
    /// file is not visible in the process environment.
    pub token: Option<Secret>,
    /// File holding the ACL token (surrounding whitespace ignored). Read when
    /// the client is built, so a rotated token is picked up on restart.
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed Consul's HTTPS certificate, added to the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// Datacenter to query; empty means the agent's own.
    pub datacenter: Option<String>,
    /// Time limit for one non-blocking call (connect included). Blocking
    /// queries get their wait plus Consul's jitter (wait/16) plus this.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a blocking query waits for a change before Consul answers
    /// anyway (Consul caps it at 10 minutes).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Oldest acceptable answer for reads that allow stale results; an answer
    /// whose `X-Consul-LastContact` is older is asked again consistently.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// KV prefix under which rollgate keeps its state (plans, rollouts, the
    /// leader lock, the alert outbox). Several independent rollgate
    /// installations can share one Consul with different prefixes.
    pub kv_prefix: String,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8500".into(),
            token: None,
            token_file: None,
            ca_file: None,
            datacenter: None,
            timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
            max_stale: Duration::from_secs(5),
            kv_prefix: "rollgate".into(),
        }
    }
}

// Hand-written so that no `{:?}` anywhere can show the token.
impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("address", &self.address)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("ca_file", &self.ca_file)
            .field("datacenter", &self.datacenter)
            .field("timeout", &self.timeout)
            .field("max_wait", &self.max_wait)
            .field("max_stale", &self.max_stale)
            .field("kv_prefix", &self.kv_prefix)
            .finish()
    }
}

/// Log output settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers (journald, CloudWatch).
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives
    /// (`rollgate=debug,reqwest=warn`). `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A secret value (token, password): readable by the code that needs it,
/// never shown. `Debug`, `Display` and `Serialize` all print `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path in one style everywhere: tables joined with `.`, entries of
    /// a list by index, e.g. `consul.timeout`, `services[0].rollout.batch_size`.
    pub key: String,
    /// What was given (already redacted for secrets), or empty.
    pub value: String,
    /// The rule it breaks, phrased so the fix is obvious.
    pub rule: String,
    /// Where the value came from (the file's full path, `environment
    /// variable NAME`), when known.
    pub source: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if !self.value.is_empty() {
            write!(f, " = {:?}", self.value)?;
        }
        write!(f, ": {}", self.rule)?;
        if let Some(source) = &self.source {
            write!(f, " (in {source})")?;
        }
        Ok(())
    }
}

/// The configuration could not be loaded. Carries every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Every problem, in key order within each source.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Collects problems during validation.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records that `key` with `value` breaks `rule`.
    pub fn push(&mut self, key: &str, value: impl fmt::Display, rule: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            value: value.to_string(),
            rule: rule.into(),
            source: None,
        });
    }

    /// Checks `lo <= d <= hi`.
    pub fn duration_in(&mut self, key: &str, d: Duration, lo: Duration, hi: Duration) {
        if d < lo || d > hi {
            self.push(
                key,
                humantime::format_duration(d),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(lo),
                    humantime::format_duration(hi)
                ),
            );
        }
    }

    /// Checks that `path` names a readable, non-empty file.
    pub fn readable_file(&mut self, key: &str, path: &Path) {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(m) if m.is_file() => self.push(key, path.display(), "the file is empty"),
            Ok(_) => self.push(key, path.display(), "must be a regular file"),
            Err(e) => self.push(key, path.display(), format!("cannot be read: {e}")),
        }
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok` when nothing was recorded, else every problem.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

/// Where the configuration comes from: a file and an environment.
///
/// The environment is passed in, not read from the process, so tests can run
/// in parallel without touching global state.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The configuration file, and whether it was named explicitly (then it
    /// must exist).
    pub file: Option<(PathBuf, bool)>,
    /// Environment variables (name, value).
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// The process's own sources: `path` if given, else the default path (which
    /// may be absent); the process environment.
    pub fn from_process(path: Option<PathBuf>) -> Self {
        let file = match path {
            Some(p) => Some((p, true)),
            None => Some((PathBuf::from(DEFAULT_CONFIG_PATH), false)),
        };
        Self {
            file,
            env: std::env::vars().collect(),
        }
    }
}

impl Config {
    /// Loads, merges and validates the configuration, reporting every problem.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some((path, explicit)) = &sources.file {
            // Problems name the file by its full path, whatever the working
            // directory of whoever reads them.
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            if path.exists() {
                // Parse first: figment's own TOML error carries no file name.
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        toml::from_str::<toml::Table>(&text).map_err(|e| e.to_string())
                    }) {
                    Ok(_) => figment = figment.merge(Toml::file_exact(&path)),
                    Err(e) => problems.push(Problem {
                        key: path.display().to_string(),
                        value: String::new(),
                        rule: format!("not valid TOML: {}", e.trim_end()),
                        source: None,
                    }),
                }
            } else if *explicit {
                problems.push(Problem {
                    key: "--config".into(),
                    value: path.display().to_string(),
                    rule: "the configuration file does not exist".into(),
                    source: None,
                });
            }
        }
        let env = EnvSource::new(&sources.env, &mut problems);
        figment = figment.merge(env);

        // Extract section by section, so a type error in one section does not
        // hide the problems of the others.
        let config = extract(&figment, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let config = config.unwrap_or_default();
        config.validate().map_err(|mut e| {
            // A rule broken by a value names where the value came from.
            for p in e.problems.iter_mut().filter(|p| p.source.is_none()) {
                p.source = source_of(&figment, &parse_key(&p.key));
            }
            e
        })?;
        Ok(config)
    }

    /// Checks the rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.consul.validate(&mut p);
        self.log.validate(&mut p);
        self.agent.validate(&mut p);
        self.notify.validate(&mut p);
        self.watch.validate(&mut p);
        self.coordinator.validate(&mut p);
        validate_services(&self.services, &mut p);
        self.http.validate(&mut p);
        p.into_result()
    }

    /// What the process of `role` needs beyond [`Config::validate`]: the one
    /// check each daemon runs before it starts, and the one `check-config
    /// --role` runs, so the two never disagree. The coordinator needs
    /// `[[services]]`; the node agent `agent.expected_version`; the
    /// coordinator and the watcher receivers that can be built (secrets
    /// readable). Operators and CI need nothing more.
    pub fn validate_for(&self, role: Role) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        match role {
            Role::Coordinator => {
                validate_for_coordinator(self, &mut p);
                self.notify.validate_receivers(&mut p);
            }
            Role::Watcher => self.notify.validate_receivers(&mut p),
            Role::Agent => p.extend(self.agent.validate_for_agent()),
            Role::Operator | Role::Ci => {}
        }
        p.into_result()
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Deserialises every section separately and reports unknown top-level keys.
fn extract(figment: &Figment, problems: &mut Vec<Problem>) -> Option<Config> {
    let known = [
        "consul",
        "log",
        "agent",
        "notify",
        "watch",
        "coordinator",
        "services",
        "http",
    ];
    match figment.data() {
        Ok(data) => {
            if let Some(dict) = data.get(&Profile::Default) {
                for key in dict.keys().filter(|k| !known.contains(&k.as_str())) {
                    problems.push(Problem {
                        key: key.clone(),
                        value: String::new(),
                        rule: format!("unknown section; expected one of: {}", known.join(", ")),
                        source: source_of(figment, std::slice::from_ref(key)),
                    });
                }
            }
        }
        Err(e) => {
            figment_problems(figment, e, &[], "", problems);
            return None;
        }
    }
    let consul = section::<ConsulConfig>(figment, "consul", problems);
    let log = section::<LogConfig>(figment, "log", problems);
    let agent = section::<AgentConfig>(figment, "agent", problems);
    let notify = section::<crate::notify::config::NotifyConfig>(figment, "notify", problems);
    let watch = section::<crate::alerting::config::WatcherConfig>(figment, "watch", problems);
    let coordinator = section::<CoordinatorConfig>(figment, "coordinator", problems);
    let services = services(figment, problems);
    let http = section::<crate::console::config::HttpConfig>(figment, "http", problems);
    Some(Config {
        consul: consul?,
        log: log?,
        agent: agent?,
        notify: notify?,
        watch: watch?,
        coordinator: coordinator?,
        services: services?,
        http: http?,
    })
}

/// `[[services]]`: absent means none; each entry is probed on its own, so
/// a problem in one does not hide those of another.
fn services(figment: &Figment, problems: &mut Vec<Problem>) -> Option<Vec<ServiceConfig>> {
    let Ok(value) = figment.find_value("services") else {
        return Some(Vec::new());
    };
    match figment.extract_inner_lossy::<Vec<ServiceConfig>>("services") {
        Ok(v) => Some(v),
        Err(e) => {
            let before = problems.len();
            if let Value::Array(_, items) = &value {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Dict(_, dict) = item {
                        let prefix = ["services".to_string(), i.to_string()];
                        probe_leaves::<ServiceConfig>(figment, &prefix, dict, problems);
                    }
                }
            }
            if problems.len() == before {
                figment_problems(figment, e, &[], "services", problems);
            }
            None
        }
    }
}

fn section<T: serde::de::DeserializeOwned>(
    figment: &Figment,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match figment.extract_inner_lossy::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            // Serde stops at a struct's first bad field, so one wrong type
            // would hide an unknown key next to it: probe every key on its
            // own to report them all, and fall back to the first error if
            // that finds nothing (a problem only the whole section shows).
            let before = problems.len();
            if let Ok(Value::Dict(_, dict)) = figment.find_value(name) {
                probe_leaves::<T>(figment, &[name.to_string()], &dict, problems);
            }
            if problems.len() == before {
                figment_problems(figment, e, &[], name, problems);
            }
            None
        }
    }
}

/// Deserialises `T` from each leaf of `dict` alone (every section defaults
/// every field, so one key is a whole value), reporting each leaf's
/// problems under `prefix`. Tables are descended into, so two bad keys of
/// a nested table are both reported; lists are leaves.
fn probe_leaves<T: serde::de::DeserializeOwned>(
    figment: &Figment,
    prefix: &[String],
    dict: &Dict,
    problems: &mut Vec<Problem>,
) {
    fn leaves(dict: &Dict, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
        for (key, value) in dict {
            path.push(key.clone());
            match value {
                Value::Dict(_, inner) if !inner.is_empty() => leaves(inner, path, out),
                _ => out.push((path.clone(), value.clone())),
            }
            path.pop();
        }
    }
    const PROBE: &str = "probe";
    let mut found = Vec::new();
    leaves(dict, &mut Vec::new(), &mut found);
    for (path, value) in found {
        let mut one = Dict::new();
        merge_into(&mut one, &path, value);
        let mut wrapped = Dict::new();
        wrapped.insert(PROBE.to_string(), Value::from(one));
        let probe = Figment::from(Serialized::defaults(wrapped));
        if let Err(e) = probe.extract_inner_lossy::<T>(PROBE) {
            figment_problems(figment, e, prefix, PROBE, problems);
        }
    }
}

/// Turns figment's errors into problems in plain words, with full key
/// paths and the source of the value. `extracted` is the path figment was
/// asked to extract (it appends it after the leaf's path); `prefix` is put
/// in its place.
fn figment_problems(
    figment: &Figment,
    error: figment::Error,
    prefix: &[String],
    extracted: &str,
    problems: &mut Vec<Problem>,
) {
    let tail: Vec<String> = extracted
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for e in error {
        let mut inner: Vec<String> = e.path.clone();
        if inner.ends_with(&tail) {
            inner.truncate(inner.len() - tail.len());
        }
        let mut path = if prefix.is_empty() {
            tail.clone()
        } else {
            prefix.to_vec()
        };
        path.extend(inner);
        let field = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => Some(field.clone()),
            figment::error::Kind::MissingField(field) => Some(field.to_string()),
            _ => None,
        };
        if let Some(field) = field {
            if path.last() != Some(&field) {
                path.push(field);
            }
        }
        problems.push(Problem {
            key: key_path(&path),
            value: String::new(),
            rule: plain_rule(&e.kind),
            source: source_of(figment, &path),
        });
    }
}

/// `["services", "0", "rollout"]` as `services[0].rollout`: the one key-path
/// style of every problem.
pub fn key_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{s}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    out
}

/// The inverse of [`key_path`].
fn parse_key(key: &str) -> Vec<String> {
    key.split('.')
        .flat_map(|part| {
            let mut segments = Vec::new();
            let mut rest = part;
            if let Some(i) = rest.find('[') {
                segments.push(rest[..i].to_string());
                rest = &rest[i..];
                while let Some(stripped) = rest.strip_prefix('[') {
                    let Some(end) = stripped.find(']') else { break };
                    segments.push(stripped[..end].to_string());
                    rest = &stripped[end + 1..];
                }
            } else {
                segments.push(rest.to_string());
            }
            segments
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Where the value at `path` (or its nearest present ancestor) came from:
/// the file's path, or the environment variable; `None` for a default.
fn source_of(figment: &Figment, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = figment.find_value(first).ok()?;
    let mut depth = 1;
    for key in rest {
        let next = match &value {
            Value::Dict(_, d) => d.get(key).cloned(),
            Value::Array(_, a) => key.parse::<usize>().ok().and_then(|i| a.get(i).cloned()),
            _ => None,
        };
        match next {
            Some(v) => {
                value = v;
                depth += 1;
            }
            None => break,
        }
    }
    let metadata = figment.get_metadata(value.tag())?;
    match &metadata.source {
        Some(figment::Source::File(p)) => Some(p.display().to_string()),
        // The defaults written in this module.
        Some(figment::Source::Code(_)) => None,
        _ => {
            Some(metadata.interpolate(&Profile::Default, &path[..depth])).filter(|s| !s.is_empty())
        }
    }
}

/// A figment (serde) error in an operator's words: what was expected, with
/// an example where the shape is not obvious, and what was found.
fn plain_rule(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
            format!(
                "expected {}, found {}",
                plain_expected(expected),
                plain_found(found)
            )
        }
        Kind::InvalidLength(n, expected) => {
            format!("expected {}, found {n} entries", plain_expected(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!("expected one of {}, found {found:?}", expected.join(", "))
        }
        Kind::UnknownField(_, expected) => {
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(_) => "is required".into(),
        Kind::DuplicateField(_) => "is given twice".into(),
        Kind::ISizeOutOfRange(v) => format!("{v} is too large or too small here"),
        Kind::USizeOutOfRange(v) => format!("{v} is too large here"),
        Kind::Unsupported(found) => format!("{} is not supported here", plain_found(found)),
        Kind::UnsupportedKey(found, _) => {
            format!("a key must be a string, found {}", plain_found(found))
        }
        Kind::Message(m) => m.clone(),
    }
}

/// Serde's name of an expected type, for people.
fn plain_expected(expected: &str) -> String {
    fn whole(lo: i128, hi: i128) -> String {
        format!("a whole number between {lo} and {hi}")
    }
    let nonzero = expected.strip_prefix("a nonzero ");
    let lo_one = |lo: i128| if nonzero.is_some() { 1 } else { lo };
    match nonzero.unwrap_or(expected) {
        "u8" => whole(lo_one(0), u8::MAX.into()),
        "u16" => whole(lo_one(0), u16::MAX.into()),
        "u32" => whole(lo_one(0), u32::MAX.into()),
        "u64" | "usize" => whole(lo_one(0), u64::MAX.into()),
        "i8" => whole(i8::MIN.into(), i8::MAX.into()),
        "i16" => whole(i16::MIN.into(), i16::MAX.into()),
        "i32" => whole(i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => whole(i64::MIN.into(), i64::MAX.into()),
        "f32" | "f64" => "a number".into(),
        "a duration" | "duration" => "a duration such as 30s or 5m".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a string" | "a borrowed string" | "string" | "a character" => "a string".into(),
        "path string" => "a file path".into(),
        "socket address" => "an address and port such as 127.0.0.1:9100".into(),
        "a sequence" | "sequence" => "a list".into(),
        "a map" | "map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.into(),
    }
}

/// What was found, as it would be written in the file.
fn plain_found(found: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match found {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Char(c) => format!("{:?}", c.to_string()),
        Actual::Str(s) => format!("{s:?}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        Actual::Unit => "nothing".into(),
        other => other.to_string(),
    }
}

impl ConsulConfig {
    fn validate(&self, p: &mut Problems) {
        if let Err(rule) = normalise_consul_address(&self.address, false) {
            p.push("consul.address", &self.address, rule);
        }
        if self.token.is_some() && self.token_file.is_some() {
            p.push(
                "consul.token_file",
                self.token_file
                    .as_deref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
                "set either consul.token or consul.token_file, not both",
            );
        }
        if let Some(f) = &self.token_file {
            p.readable_file("consul.token_file", f);
        }
        if let Some(f) = &self.ca_file {
            p.readable_file("consul.ca_file", f);
        }
        if let Some(token) = &self.token {
            if token.expose().trim().is_empty() {
                p.push("consul.token", token, "must not be empty");
            }
        }
        let s = Duration::from_secs;
        p.duration_in("consul.timeout", self.timeout, s(1), s(300));
        p.duration_in("consul.max_wait", self.max_wait, s(1), s(600));
        p.duration_in("consul.max_stale", self.max_stale, s(0), s(3600));
        let prefix_ok = !self.kv_prefix.is_empty()
            && !self.kv_prefix.starts_with('/')
            && !self.kv_prefix.ends_with('/')
            && self
                .kv_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !prefix_ok {
            p.push(
                "consul.kv_prefix",
                &self.kv_prefix,
                "must be non-empty, use letters, digits, '-', '_', '.', '/', and not start or end with '/'",
            );
        }
    }

    /// The token to send: `token`, or the content of `token_file`.
    pub fn resolve_token(&self) -> std::io::Result<Option<Secret>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        match &self.token_file {
            Some(path) => {
                let raw = std::fs::read_to_string(path)?;
                Ok(Some(Secret::new(raw.trim())))
            }
            None => Ok(None),
        }
    }

    /// The address as a URL with a scheme and no trailing slash.
    pub fn base_url(&self) -> Result<String, String> {
        normalise_consul_address(&self.address, false)
    }
}

impl LogConfig {
    fn validate(&self, p: &mut Problems) {
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.level) {
            p.push(
                "log.level",
                &self.level,
                format!("not a valid log filter: {e}"),
            );
        }
    }
}

/// Accepts `host:port` or `http(s)://host:port[/]` as Consul's CLI does and
/// returns `scheme://host:port`.
fn normalise_consul_address(address: &str, ssl: bool) -> Result<String, String> {
    let address = address.trim();
    if address.is_empty() {
        return Err("must not be empty".into());
    }
    let with_scheme = if address.contains("://") {
        address.to_string()
    } else {
        format!("{}://{address}", if ssl { "https" } else { "http" })
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| format!("must be host:port or an http(s) URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not supported; use http or https",
            url.scheme()
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| "must name a host".to_string())?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err("must not have a path".into());
    }
    let port = url.port_or_known_default().unwrap_or(8500);
    // IPv6 hosts keep their brackets in host_str only through Url's Display.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

/// The environment as a figment provider: Consul's variables mapped onto the
/// `consul` section, then `ROLLGATE_*` variables.
///
/// Values are kept as strings (figment's lossy extraction turns them into
/// numbers or booleans where the key wants one), so `expected_version = 1.10`
/// is not read as the float 1.1. A value starting with `[` or `{` is parsed as
/// an array or table.
struct EnvSource {
    consul: Dict,
    rollgate: Dict,
    /// The key path each variable sets and its name, rollgate's own first
    /// (they win), so a problem names the variable that holds the value: a
    /// list given whole (`ROLLGATE_SERVICES`) included.
    names: Vec<(Vec<String>, String)>,
}

impl EnvSource {
    fn new(env: &[(String, String)], problems: &mut Vec<Problem>) -> Self {
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let mut consul = Dict::new();
        let ssl = match get("CONSUL_HTTP_SSL") {
            None => None,
            Some(v) => match parse_bool(v) {
                Some(b) => Some(b),
                None => {
                    problems.push(Problem {
                        key: "consul.address".into(),
                        value: v.into(),
                        rule: "CONSUL_HTTP_SSL must be true or false".into(),
                        source: Some("environment variable CONSUL_HTTP_SSL".into()),
                    });
                    None
                }
            },
        };
        let addr = get("CONSUL_HTTP_ADDR").map(str::to_string).or_else(|| {
            // SSL alone switches the default address to https.
            ssl.filter(|s| *s).map(|_| "127.0.0.1:8500".to_string())
        });
        let mut consul_names = Vec::new();
        let key = |k: &str| vec!["consul".to_string(), k.to_string()];
        if get("CONSUL_HTTP_ADDR").is_some() {
            consul_names.push((key("address"), "CONSUL_HTTP_ADDR".to_string()));
        } else if ssl.is_some() {
            consul_names.push((key("address"), "CONSUL_HTTP_SSL".to_string()));
        }
        for (k, var) in [
            ("token", "CONSUL_HTTP_TOKEN"),
            ("token_file", "CONSUL_HTTP_TOKEN_FILE"),
            ("ca_file", "CONSUL_CACERT"),
        ] {
            if get(var).is_some() {
                consul_names.push((key(k), var.to_string()));
            }
        }
        if let Some(addr) = addr {
            let value = match normalise_consul_address(&addr, ssl.unwrap_or(false)) {
                Ok(url) => url,
                Err(_) => addr, // validation reports it with the rule
            };
            consul.insert("address".into(), Value::from(value));
        }
        if let Some(t) = get("CONSUL_HTTP_TOKEN") {
            consul.insert("token".into(), Value::from(t.to_string()));
        }
        if let Some(f) = get("CONSUL_HTTP_TOKEN_FILE") {
            consul.insert("token_file".into(), Value::from(f.to_string()));
        }
        if let Some(f) = get("CONSUL_CACERT") {
            consul.insert("ca_file".into(), Value::from(f.to_string()));
        }

        let mut rollgate = Dict::new();
        let mut names = Vec::new();
        let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in env {
            if k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()) {
                vars.insert(k, v);
            }
        }
        for (name, raw) in vars {
            let path = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>();
            if path.iter().any(String::is_empty) {
                problems.push(Problem {
                    key: path.join("."),
                    value: String::new(),
                    rule: "malformed variable name; use ROLLGATE_<SECTION>__<KEY>".into(),
                    source: Some(format!("environment variable {name}")),
                });
                continue;
            }
            let trimmed = raw.trim();
            let value = if trimmed.starts_with('[') || trimmed.starts_with('{') {
                trimmed
                    .parse::<Value>()
                    .unwrap_or_else(|_| Value::from(raw.to_string()))
            } else {
                Value::from(raw.to_string())
            };
            names.push((path.clone(), name.to_string()));
            merge_into(&mut rollgate, &path, value);
        }
        names.extend(consul_names);
        Self {
            consul,
            rollgate,
            names,
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn merge_into(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                merge_into(inner, rest, value);
            }
        }
    }
}

/// Merges `top` into `base`, tables recursively, `top` winning.
fn overlay(base: &mut Dict, top: &Dict) {
    for (key, value) in top {
        match (base.get_mut(key), value) {
            (Some(Value::Dict(_, inner)), Value::Dict(_, top_inner)) => overlay(inner, top_inner),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

impl Provider for EnvSource {
    fn metadata(&self) -> Metadata {
        let names = self.names.clone();
        Metadata::named("environment variable").interpolater(move |_profile, keys| {
            let holder = names
                .iter()
                .rev()
                .filter(|(path, _)| path.len() <= keys.len() && keys[..path.len()] == path[..])
                .max_by_key(|(path, _)| path.len())
                .map(|(_, name)| name.clone());
            let name = holder.unwrap_or_else(|| {
                format!(
                    "{ENV_PREFIX}{}",
                    keys.iter()
                        .map(|k| k.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join("__")
                )
            });
            format!("environment variable {name}")
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // Consul's variables first, rollgate's own on top.
        let mut dict = Dict::new();
        if !self.consul.is_empty() {
            dict.insert("consul".into(), Value::from(self.consul.clone()));
        }
        overlay(&mut dict, &self.rollgate);
        let mut map = Map::new();
        map.insert(Profile::Default, dict);
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn addresses_normalise_like_consuls_cli() {
        assert_eq!(
            normalise_consul_address("10.0.0.1:8500", false).unwrap(),
            "http://10.0.0.1:8500"
        );
        assert_eq!(
            normalise_consul_address("consul.internal:8501", true).unwrap(),
            "https://consul.internal:8501"
        );
        assert_eq!(
            normalise_consul_address("https://consul.internal/", false).unwrap(),
            "https://consul.internal:443"
        );
        assert!(normalise_consul_address("unix:///var/run/consul.sock", false).is_err());
        assert!(normalise_consul_address("http://c:8500/v1", false).is_err());
        assert!(normalise_consul_address("", false).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("s3cr3t-token");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        let mut c = Config::default();
        c.consul.token = Some(s);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!c.to_toml().contains("s3cr3t"));
    }

    #[test]
    fn env_values_stay_strings_until_a_key_wants_a_number() {
        let sources = Sources {
            file: None,
            env: env(&[("ROLLGATE_CONSUL__KV_PREFIX", "1.10")]),
        };
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.consul.kv_prefix, "1.10");
    }

    #[test]
    fn malformed_env_name_is_a_problem() {
        let sources = Sources {
            file: None,
            env: env(&[("ROLLGATE_CONSUL____TIMEOUT", "1s")]),
        };
        let e = Config::load(&sources).unwrap_err();
        assert!(e.to_string().contains("ROLLGATE_CONSUL____TIMEOUT"), "{e}");
    }
}
