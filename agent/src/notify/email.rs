//! Email over SMTP with lettre (tokio, rustls): STARTTLS or implicit TLS,
//! required by default; plain SMTP only with `tls = "none"` and
//! `allow_insecure = true` (the sandbox). Messages have a text and an HTML
//! part and a subject that sorts well.
//!
//! SMTP refusals become [`NotifyError::SmtpRejected`], naming the receiver,
//! what was refused (the login, a recipient, the message) and whether
//! retrying helps (4xx) or not (5xx). The password is never logged.

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{EmailReceiver, TlsMode, resolve_secret};
use super::{Event, Notifier, NotifyError, render};

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
        Ok(Self {
            name: name.into(),
            server: format!("{}:{port}", config.host),
            from,
            to,
            transport: builder.build(),
        })
    }

    fn message(&self, event: &Event) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(render::subject(event));
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(
            render::text(event),
            render::html(event),
        ))
        .map_err(|e| NotifyError::Config {
            receiver: self.name.clone(),
            message: format!("cannot build the message: {e}"),
        })
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

    fn send<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let msg = self.message(event)?;
            self.transport
                .send(msg)
                .await
                .map_err(|e| self.map_error(e))?;
            tracing::debug!(receiver = %self.name, server = %self.server, event = %event.key,
                "Email sent.");
            Ok(())
        })
    }
}
