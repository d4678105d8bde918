//! Sessions: the liveness token behind locks.

use reqwest::Method;

use super::types::{SessionEntry, SessionRequest};
use super::{Client, Error, QueryOptions, Response, path_segment};

#[derive(serde::Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

impl Client {
    /// `PUT /v1/session/create`: answers the new session's ID.
    pub async fn session_create(&self, request: &SessionRequest) -> Result<String, Error> {
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::Config(format!("session request cannot be encoded: {e}")))?;
        let created: Created = self
            .write_json(Method::PUT, "/v1/session/create", &[], Some(body))
            .await?;
        Ok(created.id)
    }

    /// `PUT /v1/session/renew/:id`: `None` when the session no longer exists
    /// (Consul answers 404), which means every lock it held is gone.
    pub async fn session_renew(&self, id: &str) -> Result<Option<SessionEntry>, Error> {
        let path = format!("/v1/session/renew/{}", path_segment(id, false));
        match self
            .write_json::<Vec<SessionEntry>>(Method::PUT, &path, &[], None)
            .await
        {
            Ok(v) => Ok(v.into_iter().next()),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/session/destroy/:id`.
    pub async fn session_destroy(&self, id: &str) -> Result<bool, Error> {
        let path = format!("/v1/session/destroy/{}", path_segment(id, false));
        self.write_json(Method::PUT, &path, &[], None).await
    }

    /// `GET /v1/session/info/:id`, `None` when it does not exist.
    pub async fn session_info(
        &self,
        id: &str,
        opts: &QueryOptions,
    ) -> Result<Response<Option<SessionEntry>>, Error> {
        let path = format!("/v1/session/info/{}", path_segment(id, false));
        // Consul answers 200 with `null` or `[]` for an unknown session.
        let r: Response<Option<Option<Vec<SessionEntry>>>> =
            self.read_optional(&path, &[], opts).await?;
        Ok(Response {
            value: r.value.flatten().and_then(|v| v.into_iter().next()),
            meta: r.meta,
        })
    }
}
