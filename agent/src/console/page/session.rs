//! The page's sessions: who logged in, with what Consul token, and the
//! CSRF token their forms carry.
//!
//! The browser holds only an opaque, random 256-bit session ID in the
//! cookie `rollgate_session` (HttpOnly, SameSite=Strict, Path=/, Secure
//! under TLS). The Consul token stays in this process's memory, in a table
//! keyed by that ID: it never travels back to the browser, so no page, URL
//! or log can show it, and logging out forgets it at once.
//!
//! Why a table and not a sealed cookie: sealing the token into the cookie
//! needs an AEAD key that every replica shares to be any better (a key
//! generated at start is per replica too), and a stolen sealed cookie
//! cannot be revoked before it expires. The table needs no cryptography
//! beyond random IDs and forgets everything on a restart.
//!
//! **A session is per replica**: a console behind a load balancer needs
//! sticky sessions (by the cookie or by client address); a request that
//! reaches another replica is sent to the login page, nothing worse.
//!
//! The table is bounded ([`MAX_SESSIONS`]); a session lives [`TTL`] from
//! login. Every form carries the session's CSRF token in a hidden `csrf`
//! input; [`Sessions::check_csrf`] compares it in constant time before
//! anything is written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;

use crate::config::Secret;

/// The cookie's name.
pub const COOKIE: &str = "rollgate_session";

/// How long a session lives after login.
pub const TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions held at once; past it, the oldest is forgotten.
pub const MAX_SESSIONS: usize = 10_000;

/// One logged-in operator.
#[derive(Clone)]
pub struct Session {
    /// The operator's Consul token (`None` with ACLs off).
    pub token: Option<Secret>,
    /// Who they are: the token's `Description (AccessorID)`, or the name
    /// given with ACLs off.
    pub who: String,
    /// Whether Consul's ACLs were on at login.
    pub acls: bool,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When the session ends.
    expires: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("who", &self.who)
            .field("acls", &self.acls)
            .finish_non_exhaustive()
    }
}

/// Why a form post is refused before anything is done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// No session cookie, or one this replica does not know.
    #[error(
        "your session has ended (or began on another console replica): log in again, then repeat the action"
    )]
    NoSession,
    /// The form has no `csrf` field.
    #[error("the form carries no CSRF token; reload the page and try again")]
    Missing,
    /// The field is not this session's token (stale page, or another site).
    #[error(
        "the form's CSRF token is not this session's (a page from before you logged in again, or a post from another site); reload the page and try again"
    )]
    Wrong,
}

/// The session table of this replica.
pub struct Sessions {
    /// Session ID → session.
    table: Mutex<HashMap<String, Session>>,
    /// Whether cookies get `Secure` (the console speaks TLS, or its public
    /// URL is https behind a proxy).
    secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the IDs: each is a login.
        f.debug_struct("Sessions")
            .field("held", &self.len())
            .field("secure", &self.secure)
            .finish()
    }
}

/// 256 random bits, URL-safe base64 (the thread RNG is a CSPRNG seeded
/// from the OS).
fn random_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Compares in time that depends only on the lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// An empty table; `secure` puts `Secure` on the cookie.
    pub fn new(secure: bool) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            secure,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave a half-written entry
        // (inserts and removes are single calls): go on with the table.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session; answers the `Set-Cookie` value.
    pub fn create(&self, token: Option<Secret>, who: String, acls: bool) -> HeaderValue {
        let id = random_id();
        let now = Instant::now();
        let session = Session {
            token,
            who,
            acls,
            csrf: random_id(),
            expires: now + TTL,
        };
        let mut table = self.table();
        table.retain(|_, s| s.expires > now);
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        table.insert(id.clone(), session);
        drop(table);
        self.cookie(&id, TTL.as_secs())
    }

    /// The `Set-Cookie` value that clears the cookie.
    pub fn clear(&self) -> HeaderValue {
        self.cookie("", 0)
    }

    fn cookie(&self, id: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text =
            format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
        // The ID is base64url: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session the request's cookie names, if this replica has it and
    /// it has not expired.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_id(headers)?;
        let mut table = self.table();
        match table.get(&id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                table.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Forgets the request's session.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_id(headers) {
            self.table().remove(&id);
        }
    }

    /// The session, if the form's `csrf` is its token.
    pub fn check_csrf(
        &self,
        headers: &HeaderMap,
        csrf: Option<&str>,
    ) -> Result<Session, CsrfError> {
        let session = self.get(headers).ok_or(CsrfError::NoSession)?;
        match csrf {
            None | Some("") => Err(CsrfError::Missing),
            Some(given) if same(given, &session.csrf) => Ok(session),
            Some(_) => Err(CsrfError::Wrong),
        }
    }

    /// Sessions held (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session ID in the request's `Cookie` headers.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn with_cookie(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        h
    }

    #[test]
    fn the_cookie_has_the_attributes_and_names_only_a_random_id() {
        let s = Sessions::new(true);
        let c = s.create(Some(Secret::new("tok-secret")), "alice (a1)".into(), true);
        let text = c.to_str().unwrap();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
            assert!(text.contains(attr), "{text}");
        }
        assert!(!text.contains("tok-secret"));
        let id = text
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("rollgate_session=")
            .unwrap();
        assert_eq!(id.len(), 43, "256 bits in base64url");
        let plain = Sessions::new(false).create(None, "bob".into(), false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn csrf_must_be_the_sessions_own_token() {
        let s = Sessions::new(false);
        let h = with_cookie(&s.create(None, "bob".into(), false));
        let session = s.get(&h).unwrap();
        assert_eq!(s.check_csrf(&h, None).unwrap_err(), CsrfError::Missing);
        assert_eq!(s.check_csrf(&h, Some("x")).unwrap_err(), CsrfError::Wrong);
        assert_eq!(s.check_csrf(&h, Some(&session.csrf)).unwrap().who, "bob");
        // A second login's page does not carry the first one's token.
        let h2 = with_cookie(&s.create(None, "bob".into(), false));
        assert_eq!(
            s.check_csrf(&h2, Some(&session.csrf)).unwrap_err(),
            CsrfError::Wrong
        );
        s.remove(&h);
        assert_eq!(
            s.check_csrf(&h, Some(&session.csrf)).unwrap_err(),
            CsrfError::NoSession
        );
        assert_eq!(
            s.check_csrf(&HeaderMap::new(), Some("x")).unwrap_err(),
            CsrfError::NoSession
        );
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        let s = Sessions::new(false);
        let h = with_cookie(&s.create(Some(Secret::new("tok-secret")), "a".into(), true));
        let shown = format!("{:?} {:?}", s.get(&h).unwrap(), s);
        assert!(!shown.contains("tok-secret"), "{shown}");
    }
}
