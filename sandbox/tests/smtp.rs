//! The sandbox SMTP server, spoken to with raw SMTP (plain and STARTTLS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use sandbox::smtp::{Config, SmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// Sends `line` (unless empty) and answers the server's full reply.
async fn say<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufStream<S>, line: &str) -> String {
    if !line.is_empty() {
        s.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut out = String::new();
    loop {
        let mut l = String::new();
        s.read_line(&mut l).await.unwrap();
        out.push_str(&l);
        if l.len() < 4 || l.as_bytes()[3] != b'-' {
            return out;
        }
    }
}

async fn send_one<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufStream<S>, rcpt: &str) -> String {
    assert!(
        say(s, "MAIL FROM:<rollgate@example.com>")
            .await
            .starts_with("250")
    );
    let r = say(s, &format!("RCPT TO:<{rcpt}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    assert!(say(s, "DATA").await.starts_with("354"));
    say(s, "Subject: [rollgate] FIRING web\r\nFrom: rollgate@example.com\r\n\r\nline one\r\n..dotted\r\n.").await
}

#[tokio::test]
async fn plain_smtp_messages_are_kept_and_readable() {
    let server = SmtpServer::start(Config::default()).await.unwrap();
    let mut s = BufStream::new(TcpStream::connect(server.addr()).await.unwrap());
    assert!(say(&mut s, "").await.starts_with("220"));
    let ehlo = say(&mut s, "EHLO test").await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert!(send_one(&mut s, "ops@example.com").await.starts_with("250"));
    assert!(say(&mut s, "QUIT").await.starts_with("221"));
    let m = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].to, vec!["ops@example.com"]);
    assert_eq!(m[0].subject(), "[rollgate] FIRING web");
    assert!(
        m[0].data.contains("\r\n.dotted\r\n"),
        "dot-unstuffed: {:?}",
        m[0].data
    );
    assert!(!m[0].tls);
    server.shutdown().await;
}

#[tokio::test]
async fn a_recipient_and_logins_can_be_refused() {
    let server = SmtpServer::start(Config {
        credentials: Some(("alice".into(), "secret".into())),
        ..Config::default()
    })
    .await
    .unwrap();
    server.reject_recipient("nobody@example.com");
    let mut s = BufStream::new(TcpStream::connect(server.addr()).await.unwrap());
    say(&mut s, "").await;
    say(&mut s, "EHLO test").await;
    // AUTH PLAIN with a wrong password, then the right one.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(
        say(&mut s, &format!("AUTH PLAIN {}", b64("\0alice\0wrong")))
            .await
            .starts_with("535")
    );
    assert!(
        say(&mut s, &format!("AUTH PLAIN {}", b64("\0alice\0secret")))
            .await
            .starts_with("235")
    );
    let r = send_one(&mut s, "nobody@example.com").await;
    assert!(
        r.starts_with("550 5.1.1") && r.contains("Recipient address rejected"),
        "{r}"
    );
    say(&mut s, "RSET").await;
    assert!(send_one(&mut s, "ops@example.com").await.starts_with("250"));
    server.reject_logins(true);
    assert!(
        say(&mut s, &format!("AUTH PLAIN {}", b64("\0alice\0secret")))
            .await
            .starts_with("535")
    );
    let m = server.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].login.as_deref(), Some("alice"));
    server.shutdown().await;
}

#[tokio::test]
async fn starttls_upgrades_with_a_certificate_signed_by_the_handed_out_ca() {
    let server = SmtpServer::start(Config {
        starttls: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let pem = server.ca_pem().expect("a CA").to_string();
    let mut plain = BufStream::new(TcpStream::connect(server.addr()).await.unwrap());
    say(&mut plain, "").await;
    assert!(say(&mut plain, "EHLO test").await.contains("STARTTLS"));
    assert!(say(&mut plain, "STARTTLS").await.starts_with("220"));

    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, plain.into_inner()).await.unwrap();
    let mut s = BufStream::new(tls);
    let ehlo = say(&mut s, "EHLO test").await;
    assert!(!ehlo.contains("STARTTLS"), "not offered twice: {ehlo}");
    assert!(send_one(&mut s, "ops@example.com").await.starts_with("250"));
    let m = server.wait_for(1, Duration::from_secs(5)).await;
    assert!(m[0].tls);
    server.shutdown().await;
}

async fn send_with_id<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufStream<S>, id: &str) -> String {
    assert!(
        say(s, "MAIL FROM:<rollgate@example.com>")
            .await
            .starts_with("250")
    );
    assert!(say(s, "RCPT TO:<ops@example.com>").await.starts_with("250"));
    assert!(say(s, "DATA").await.starts_with("354"));
    say(
        s,
        &format!("Subject: x\r\nMessage-ID: {id}\r\n\r\nbody\r\n."),
    )
    .await
}

#[tokio::test]
async fn copies_are_counted_per_message_id_and_a_mailbox_keeps_one() {
    let server = SmtpServer::start(Config::default()).await.unwrap();
    let mut s = BufStream::new(TcpStream::connect(server.addr()).await.unwrap());
    assert!(say(&mut s, "").await.starts_with("220"));
    assert!(say(&mut s, "EHLO test").await.starts_with("250"));
    for id in ["<a@example.com>", "<a@example.com>", "<b@example.com>"] {
        assert!(send_with_id(&mut s, id).await.starts_with("250"));
    }
    assert!(send_one(&mut s, "ops@example.com").await.starts_with("250"));
    assert_eq!(
        server.message_ids(),
        [
            Some("<a@example.com>".to_string()),
            Some("<a@example.com>".to_string()),
            Some("<b@example.com>".to_string()),
            None
        ]
    );
    assert_eq!(server.copies("<a@example.com>"), 2);
    assert_eq!(server.copies("<b@example.com>"), 1);
    assert_eq!(server.mailbox().len(), 3, "a, b, and the one without an ID");
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_server_keeps_the_message_before_answering() {
    let server = Arc::new(SmtpServer::start(Config::default()).await.unwrap());
    server.stall_after_data(true);
    let mut s = BufStream::new(TcpStream::connect(server.addr()).await.unwrap());
    assert!(say(&mut s, "").await.starts_with("220"));
    assert!(say(&mut s, "EHLO test").await.starts_with("250"));
    let sending = tokio::spawn(async move { send_with_id(&mut s, "<c@example.com>").await });
    // Kept, but not answered while stalled.
    assert_eq!(server.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sending.is_finished(), "no 250 while stalled");
    server.stall_after_data(false);
    assert!(sending.await.unwrap().starts_with("250"));
    Arc::try_unwrap(server).unwrap().shutdown().await;
}
