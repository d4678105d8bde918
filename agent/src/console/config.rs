//! The `[http]` section: where the coordinator's console listens, with
//! what certificate, and the address people reach it at.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// Settings of the console (`rollgate coordinator` only: the node agent
/// never reads them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on (an IP address, not a name, so the check
    /// below can tell loopback from the network). Port 0 picks a free port.
    pub listen: String,
    /// PEM certificate chain served over TLS; with `tls_key_file`, or
    /// neither (plain HTTP).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Plain HTTP on an address other than loopback: operators' Consul
    /// tokens would cross the network in clear text, so it must be asked
    /// for by name.
    pub allow_plaintext_outside_loopback: bool,
    /// The console's address as people reach it (behind a proxy, say), for
    /// links; empty means none are made.
    pub public_url: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9180".into(),
            tls_cert_file: None,
            tls_key_file: None,
            allow_plaintext_outside_loopback: false,
            public_url: String::new(),
        }
    }
}

impl HttpConfig {
    /// The listen address, if it parses.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            "must be IP:PORT (an IP address, not a host name), e.g. \"127.0.0.1:9180\" or \"[::1]:9180\"".to_string()
        })
    }

    /// Whether TLS is configured (both files given).
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    pub(crate) fn validate(&self, p: &mut Problems) {
        match self.listen_addr() {
            Err(rule) => p.push("http.listen", &self.listen, rule),
            Ok(addr) => {
                if !addr.ip().is_loopback() && !self.tls() && !self.allow_plaintext_outside_loopback
                {
                    p.push(
                        "http.listen",
                        &self.listen,
                        "is not a loopback address, so operators' Consul tokens would cross the network \
                         in clear text: set http.tls_cert_file and http.tls_key_file, or \
                         http.allow_plaintext_outside_loopback = true behind a TLS-terminating proxy",
                    );
                }
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                p.readable_file("http.tls_cert_file", cert);
                p.readable_file("http.tls_key_file", key);
            }
            (Some(cert), None) => p.push(
                "http.tls_key_file",
                "",
                format!("is required with http.tls_cert_file ({})", cert.display()),
            ),
            (None, Some(key)) => p.push(
                "http.tls_cert_file",
                "",
                format!("is required with http.tls_key_file ({})", key.display()),
            ),
            (None, None) => {}
        }
        if !self.public_url.is_empty() {
            match url::Url::parse(&self.public_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.push(
                    "http.public_url",
                    &self.public_url,
                    "must be an http:// or https:// URL, e.g. \"https://rollgate.example.com\"",
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn problems(c: &HttpConfig) -> String {
        let mut p = Problems::default();
        c.validate(&mut p);
        match p.into_result() {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_default_listens_on_loopback_in_plain_http() {
        let c = HttpConfig::default();
        assert!(c.listen_addr().unwrap().ip().is_loopback());
        assert_eq!(problems(&c), "");
    }

    #[test]
    fn every_key_is_checked_and_named() {
        let c = HttpConfig {
            listen: "console:80".into(),
            public_url: "rollgate.example.com".into(),
            tls_cert_file: Some("/nonexistent/cert.pem".into()),
            ..HttpConfig::default()
        };
        let e = problems(&c);
        assert!(e.contains("http.listen = \"console:80\""), "{e}");
        assert!(e.contains("http.public_url"), "{e}");
        assert!(e.contains("http.tls_key_file: is required"), "{e}");
    }

    #[test]
    fn plain_http_outside_loopback_must_be_asked_for() {
        let mut c = HttpConfig {
            listen: "0.0.0.0:9180".into(),
            ..HttpConfig::default()
        };
        let e = problems(&c);
        assert!(e.contains("http.listen"), "{e}");
        assert!(e.contains("allow_plaintext_outside_loopback"), "{e}");
        c.allow_plaintext_outside_loopback = true;
        assert_eq!(problems(&c), "");
    }
}
