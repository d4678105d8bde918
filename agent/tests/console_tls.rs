//! The console over TLS (rustls) with a certificate from files, as
//! `[http] tls_cert_file`/`tls_key_file` give it; a file that is not a
//! certificate stops the start with the key named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rollgate::config::Config;
use tokio_util::sync::CancellationToken;

/// A CA (its PEM) and a localhost certificate signed by it, written to
/// `dir` as cert.pem and key.pem.
fn certificate(dir: &std::path::Path) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rollgate console test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".into();
    c.http.tls_cert_file = Some(dir.join("cert.pem"));
    c.http.tls_key_file = Some(dir.join("key.pem"));
    c
}

#[tokio::test]
async fn the_console_speaks_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificate(dir.path());
    let config = config(dir.path());
    config.validate().unwrap();
    let client = rollgate::consul::Client::new(&config.consul).unwrap();
    let cancel = CancellationToken::new();
    let running = rollgate::console::start(&config, &client, "tls", cancel.clone())
        .await
        .unwrap();
    assert!(running.tls);
    let port = running.addr.port();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = https
        .get(format!("https://localhost:{port}/v1/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP gets no answer from a TLS port.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/v1/openapi.yaml")).await;
    assert!(
        plain.map(|r| r.status().as_u16() != 200).unwrap_or(true),
        "no plain HTTP on the TLS listener"
    );
    // A client that does not trust the CA is refused by the handshake.
    let untrusting = reqwest::Client::new()
        .get(format!("https://localhost:{port}/v1/openapi.yaml"))
        .send()
        .await;
    assert!(untrusting.is_err());
    cancel.cancel();
    running.stopped().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path());
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
    let config = config(dir.path());
    let client = rollgate::consul::Client::new(&config.consul).unwrap();
    let e = rollgate::console::start(&config, &client, "tls", CancellationToken::new())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("http.tls_cert_file"), "{text}");
    assert!(text.contains("cert.pem"), "{text}");
}
