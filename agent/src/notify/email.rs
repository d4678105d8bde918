//! Email over SMTP with lettre (tokio, rustls): STARTTLS or implicit TLS,
//! required by default; plain SMTP only with `tls = "none"` and
//! `allow_insecure = true` (the sandbox). Messages have a text and an HTML
//! part and a subject that sorts well.
//!
//! Threading: every notice has a `Message-ID` made of its outbox key and
//! the domain of the configured `from` address ([`message_id`]), the same on
//! every attempt and on every leader, so a resend after a takeover is a copy
//! that mail systems recognise (and those with duplicate suppression drop).
//! A story's follow-ups carry `In-Reply-To` (the previous notice) and
//! `References` (the first and the previous), so mail clients show one
//! thread per alert group or rollout.
//!
//! SMTP refusals become [`NotifyError::SmtpRejected`], naming the receiver,
//! what was refused (the login, a recipient, the message) and whether
//! retrying helps (4xx) or not (5xx). The password is never logged.

use futures::future::BoxFuture;
use lettre::message::header::{InReplyTo, MessageId, References};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{EmailReceiver, TlsMode, resolve_secret};
use super::{Event, Links, Notifier, NotifyError, Sent, Thread, render};

/// The `Message-ID` of the notice whose outbox key is `notice`, for a sender
/// whose address is in `domain`: `<rollgate.KEY@DOMAIN>`, with every byte of
/// the key that RFC 5322 does not allow there written as `=XX` (hex). Stable:
/// nothing of the time, the process or chance goes into it.
pub fn message_id(notice: &str, domain: &str) -> String {
    let mut local = String::from("rollgate.");
    for b in notice.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || "-_/".contains(c) {
            local.push(c);
        } else {
            local.push_str(&format!("={b:02X}"));
        }
    }
    format!("<{local}@{domain}>")
}

/// A list of recipients reached through one SMTP server.
pub struct EmailNotifier {
    /// Receiver name.
    name: String,
    /// `host:port`, for errors.
    server: String,
    /// Sender.
    from: Mailbox,
    /// Recipients.
    to: Vec<Mailbox>,
    /// The right side of every `Message-ID`: the `from` address's domain.
    domain: String,
    /// lettre's transport (holds the credentials; never printed).
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("to", &self.to.len())
            .finish()
    }
}

impl EmailNotifier {
    /// Resolves the password, reads the CA file and builds the transport.
    pub fn new(
        name: &str,
        config: &EmailReceiver,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NotifyError> {
        let err = |message: String| NotifyError::Config {
            receiver: name.into(),
            message,
        };
        if config.tls == TlsMode::None && !config.allow_insecure {
            return Err(err(
                "email.tls = \"none\" needs allow_insecure = true; use starttls or implicit".into(),
            ));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| err(format!("email.from {:?}: {e}", config.from)))?;
        let to = config
            .to
            .iter()
            .map(|t| t.parse().map_err(|e| err(format!("email.to {t:?}: {e}"))))
            .collect::<Result<Vec<Mailbox>, _>>()?;
        if to.is_empty() {
            return Err(err("email.to: at least one recipient is required".into()));
        }
        let port = config.effective_port();
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
                .port(port)
                .timeout(Some(config.timeout));
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(config.host.clone());
                if let Some(ca) = &config.ca_file {
                    let pem = std::fs::read(ca)
                        .map_err(|e| err(format!("email.ca_file {}: {e}", ca.display())))?;
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| err(format!("email.ca_file {}: {e}", ca.display())))?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| err(format!("TLS setup: {e}")))?;
                if mode == TlsMode::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        builder = builder.tls(tls);
        if !config.username.is_empty() {
            let password = resolve_secret(
                &config.password,
                &config.password_file,
                &config.password_env,
                getenv,
            )
            .map_err(|e| err(format!("email password: {e}")))?
            .ok_or_else(|| err("email password: required with a username".into()))?;
            builder = builder.credentials(Credentials::new(
                config.username.clone(),
                password.expose().to_string(),
            ));
        }
        let domain = from.email.domain().to_string();
        Ok(Self {
            name: name.into(),
            server: format!("{}:{port}", config.host),
            domain,
            from,
            to,
            transport: builder.build(),
        })
    }

    /// The message of `event`: its stable `Message-ID` and, for a follow-up,
    /// `In-Reply-To` and `References`; answers the `Message-ID` too.
    fn message(
        &self,
        event: &Event,
        thread: &Thread,
        links: &Links,
    ) -> Result<(Message, String), NotifyError> {
        let link = links.of(event);
        let id = message_id(&thread.notice, &self.domain);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(render::subject(event))
            .header(MessageId::from(id.clone()));
        if let Some(root) = &thread.root {
            let previous = thread.previous.clone().unwrap_or_else(|| root.clone());
            let references = if previous == *root {
                root.clone()
            } else {
                format!("{root} {previous}")
            };
            b = b
                .header(InReplyTo::from(previous))
                .header(References::from(references));
        }
        for t in &self.to {
            b = b.to(t.clone());
        }
        let msg = b
            .multipart(MultiPart::alternative_plain_html(
                render::text(event, link.as_ref()),
                render::html(event, link.as_ref()),
            ))
            .map_err(|e| NotifyError::Config {
                receiver: self.name.clone(),
                message: format!("cannot build the message: {e}"),
            })?;
        Ok((msg, id))
    }

    /// Maps a lettre error to a [`NotifyError`].
    fn map_error(&self, e: lettre::transport::smtp::Error) -> NotifyError {
        let receiver = self.name.clone();
        let message = super::slack::error_chain(&e);
        if let Some(code) = e.status() {
            let code = code.to_string();
            let lower = message.to_ascii_lowercase();
            let what = if code.starts_with("53") || lower.contains("auth") {
                "the login"
            } else if lower.contains("recipient")
                || lower.contains("rcpt")
                || lower.contains("mailbox")
            {
                "a recipient"
            } else if lower.contains("sender") {
                "the sender address"
            } else {
                "the message"
            };
            return NotifyError::SmtpRejected {
                receiver,
                what,
                permanent: e.is_permanent(),
                message,
            };
        }
        if e.is_timeout() {
            return NotifyError::Unreachable {
                receiver,
                service: format!("SMTP server {}", self.server),
                message: format!("timed out: {message}"),
            };
        }
        let lower = message.to_ascii_lowercase();
        if e.is_client() && lower.contains("authentication mechanism") {
            return NotifyError::SmtpRejected {
                receiver,
                what: "the login",
                permanent: true,
                message: format!(
                    "{message} (the server offers no AUTH mechanism rollgate supports)"
                ),
            };
        }
        NotifyError::Unreachable {
            receiver,
            service: format!("SMTP server {}", self.server),
            message,
        }
    }
}

impl Notifier for EmailNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> &'static str {
        "email"
    }

    /// A resend (`maybe_sent`) is the same message with the same
    /// `Message-ID`: email cannot ask the server whether it arrived.
    fn send<'a>(
        &'a self,
        event: &'a Event,
        thread: &'a Thread,
        links: &'a Links,
    ) -> BoxFuture<'a, Result<Sent, NotifyError>> {
        Box::pin(async move {
            let (msg, id) = self.message(event, thread, links)?;
            self.transport
                .send(msg)
                .await
                .map_err(|e| self.map_error(e))?;
            tracing::debug!(receiver = %self.name, server = %self.server, event = %event.key,
                message_id = %id, "Email sent.");
            Ok(Sent {
                root: Some(thread.root.clone().unwrap_or_else(|| id.clone())),
                reference: Some(id),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_valid() {
        let id = message_id("rollgate/outbox/health/web_40node-3/17/1", "example.com");
        assert_eq!(
            id,
            "<rollgate.rollgate/outbox/health/web_40node-3/17/1@example.com>"
        );
        assert_eq!(
            message_id("rollgate/outbox/health/web_40node-3/17/1", "example.com"),
            id
        );
        let odd = message_id("a.b,c d<e>", "example.com");
        assert_eq!(odd, "<rollgate.a=2Eb=2Cc=20d=3Ce=3E@example.com>");
    }
}
