//! rollgate's records in Consul KV, all under `consul.kv_prefix`:
//!
//! | key | value |
//! |---|---|
//! | `<prefix>/leader` | the coordinator's leader lock |
//! | `<prefix>/trigger/<artifact>` | last `rollgate publish` of the artifact: `{image_id, version, at}` |
//! | `<prefix>/services/<svc>/seq` | last plan number (plan IDs are `<svc>-<n>`) |
//! | `<prefix>/services/<svc>/plans/<n>` | a [`Plan`] (decision and outcome included) |
//! | `<prefix>/services/<svc>/failed/<ami>` | an image that failed a rollout (revert-loop guard) |
//! | `<prefix>/services/<svc>/rollout` | the active rollout's state (`machine::Rollout`) |
//! | `<prefix>/services/<svc>/commands/<t>` | operator commands (pause, resume, abort, promote) not yet consumed |
//! | `<prefix>/services/<svc>/stable` | the last stable template version, image and version |
//! | `<prefix>/services/<svc>/rollouts/<n>` | finished rollouts' final states, for post-mortems |
//!
//! Every update of an existing record is a check-and-set on its ModifyIndex:
//! two operators cannot both decide a plan, and a deposed coordinator cannot
//! overwrite a newer record. The handover to the rollout is a plan whose
//! decision is `approved` and whose `outcome` is empty.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::machine::{Command, Rollout, StableRef};
use super::plan::{Decision, Millis, Plan, parse_plan_id};
use crate::consul::kv::PutOptions;
use crate::consul::{self, Client, QueryOptions};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Consul failed.
    #[error(transparent)]
    Consul(#[from] consul::Error),
    /// A record is not the JSON rollgate wrote (edited by hand, or a newer
    /// rollgate's format).
    #[error("KV record {key} is not readable: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No such plan.
    #[error("no plan {0}; `rollgate history` lists plans")]
    NoPlan(String),
    /// A plan ID that is not `<service>-<number>`.
    #[error("{0:?} is not a plan ID (expected SERVICE-NUMBER, e.g. web-3)")]
    BadPlanId(String),
    /// Someone else changed the record first, too many times in a row.
    #[error("KV record {0} kept changing under us; try again")]
    Contended(String),
}

/// The last publish of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// The image published.
    pub image_id: String,
    /// Its version.
    pub version: String,
    /// When.
    pub at: Millis,
}

/// Access to the records.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

/// Makes an artifact name (`acmeinc/web`) safe as one key segment.
pub fn artifact_key(artifact: &str) -> String {
    artifact
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Store {
    /// Records under `prefix` through `client`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The Consul client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The leader lock key.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The trigger key of an artifact.
    pub fn trigger_key(&self, artifact: &str) -> String {
        format!("{}/trigger/{}", self.prefix, artifact_key(artifact))
    }

    fn service_key(&self, service: &str, rest: &str) -> String {
        format!("{}/services/{service}/{rest}", self.prefix)
    }

    /// Prefix of a service's plan records (no trailing slash).
    pub fn plans_prefix(&self, service: &str) -> String {
        self.service_key(service, "plans")
    }

    /// Key of the active rollout's state.
    pub fn rollout_key(&self, service: &str) -> String {
        self.service_key(service, "rollout")
    }

    /// Writes the trigger of `artifact`.
    pub async fn write_trigger(&self, artifact: &str, trigger: &Trigger) -> Result<(), StoreError> {
        let body = serde_json::to_vec(trigger).map_err(|source| StoreError::Corrupt {
            key: self.trigger_key(artifact),
            source,
        })?;
        self.client
            .kv_put(&self.trigger_key(artifact), &body, &PutOptions::default())
            .await?;
        Ok(())
    }

    /// Allocates the next plan ID of `service`.
    pub async fn next_plan_id(&self, service: &str) -> Result<String, StoreError> {
        let key = self.service_key(service, "seq");
        for _ in 0..20 {
            let current = self.client.kv_get(&key, &QueryOptions::default()).await?;
            let (n, cas) = match &current.value {
                Some(kv) => {
                    let raw = kv.value().unwrap_or_default();
                    let n: u64 = String::from_utf8_lossy(&raw).trim().parse().unwrap_or(0);
                    (n, kv.modify_index)
                }
                None => (0, 0),
            };
            let next = n + 1;
            let put = PutOptions {
                cas: Some(cas),
                ..PutOptions::default()
            };
            if self
                .client
                .kv_put(&key, next.to_string().as_bytes(), &put)
                .await?
            {
                return Ok(format!("{service}-{next}"));
            }
        }
        Err(StoreError::Contended(key))
    }

    fn plan_key(&self, id: &str) -> Result<String, StoreError> {
        let (service, n) = parse_plan_id(id).ok_or_else(|| StoreError::BadPlanId(id.into()))?;
        Ok(self.service_key(service, &format!("plans/{n:010}")))
    }

    /// Stores a new plan; `false` when one with its ID exists.
    pub async fn create_plan(&self, plan: &Plan) -> Result<bool, StoreError> {
        let key = self.plan_key(&plan.id)?;
        let body = serde_json::to_vec(plan).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?;
        let put = PutOptions {
            cas: Some(0),
            ..PutOptions::default()
        };
        Ok(self.client.kv_put(&key, &body, &put).await?)
    }

    /// A plan and the ModifyIndex to update it with.
    pub async fn plan(&self, id: &str) -> Result<(Plan, u64), StoreError> {
        let key = self.plan_key(id)?;
        let r = self.client.kv_get(&key, &QueryOptions::default()).await?;
        let kv = r.value.ok_or_else(|| StoreError::NoPlan(id.into()))?;
        let plan = serde_json::from_slice(&kv.value().unwrap_or_default())
            .map_err(|source| StoreError::Corrupt { key, source })?;
        Ok((plan, kv.modify_index))
    }

    /// Writes `plan` if its record is still at `modify_index`.
    pub async fn update_plan(&self, plan: &Plan, modify_index: u64) -> Result<bool, StoreError> {
        let key = self.plan_key(&plan.id)?;
        let body = serde_json::to_vec(plan).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?;
        let put = PutOptions {
            cas: Some(modify_index),
            ..PutOptions::default()
        };
        Ok(self.client.kv_put(&key, &body, &put).await?)
    }

    /// Every plan of `service`, oldest first, with its ModifyIndex. Records
    /// that cannot be read are skipped with a warning (one bad record must
    /// not stop the service).
    pub async fn plans(&self, service: &str) -> Result<Vec<(Plan, u64)>, StoreError> {
        let prefix = self.service_key(service, "plans/");
        let r = self
            .client
            .kv_list(&prefix, &QueryOptions::default())
            .await?;
        let mut plans = Vec::new();
        for kv in r.value {
            match serde_json::from_slice::<Plan>(&kv.value().unwrap_or_default()) {
                Ok(p) => plans.push((p, kv.modify_index)),
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "Skipping an unreadable plan record.")
                }
            }
        }
        Ok(plans)
    }

    /// Sets a plan's decision if it is still pending, with check-and-set.
    /// Answers the updated plan, or the plan as it is when it was already
    /// decided (the caller reports who decided first).
    pub async fn decide(
        &self,
        id: &str,
        decision: Decision,
        now: Millis,
    ) -> Result<Result<Plan, Plan>, StoreError> {
        for _ in 0..20 {
            let (mut plan, index) = self.plan(id).await?;
            if !plan.is_pending(now) {
                return Ok(Err(plan));
            }
            plan.decision = decision.clone();
            if self.update_plan(&plan, index).await? {
                return Ok(Ok(plan));
            }
        }
        Err(StoreError::Contended(id.into()))
    }

    /// Images that failed a rollout of `service`.
    pub async fn failed_images(&self, service: &str) -> Result<BTreeSet<String>, StoreError> {
        let prefix = self.service_key(service, "failed/");
        let r = self
            .client
            .kv_list(&prefix, &QueryOptions::default())
            .await?;
        Ok(r.value
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
            .collect())
    }

    /// Records that `image` failed a rollout of `service` (with the reason).
    pub async fn mark_failed(
        &self,
        service: &str,
        image: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let key = self.service_key(service, &format!("failed/{image}"));
        self.client
            .kv_put(&key, reason.as_bytes(), &PutOptions::default())
            .await?;
        Ok(())
    }

    fn json<T: Serialize>(&self, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
            key: key.to_string(),
            source,
        })
    }

    /// The active rollout of `service` and its ModifyIndex, if any.
    pub async fn rollout(&self, service: &str) -> Result<Option<(Rollout, u64)>, StoreError> {
        let key = self.rollout_key(service);
        let r = self.client.kv_get(&key, &QueryOptions::default()).await?;
        match r.value {
            None => Ok(None),
            Some(kv) => {
                let rollout = serde_json::from_slice(&kv.value().unwrap_or_default())
                    .map_err(|source| StoreError::Corrupt { key, source })?;
                Ok(Some((rollout, kv.modify_index)))
            }
        }
    }

    /// Writes the rollout if its record is still at `modify_index` (0:
    /// only if there is none). Answers the new ModifyIndex, or `None` when
    /// someone else wrote first.
    pub async fn save_rollout(
        &self,
        rollout: &Rollout,
        modify_index: u64,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.rollout_key(&rollout.spec.service);
        let body = self.json(&key, rollout)?;
        let put = PutOptions {
            cas: Some(modify_index),
            ..PutOptions::default()
        };
        if !self.client.kv_put(&key, &body, &put).await? {
            return Ok(None);
        }
        let r = self.client.kv_get(&key, &QueryOptions::default()).await?;
        Ok(r.value.map(|kv| kv.modify_index))
    }

    /// Moves a finished rollout to the archive and clears the active key.
    pub async fn archive_rollout(
        &self,
        rollout: &Rollout,
        modify_index: u64,
    ) -> Result<bool, StoreError> {
        let service = &rollout.spec.service;
        let n = parse_plan_id(&rollout.spec.id).map(|(_, n)| n).unwrap_or(0);
        let key = self.service_key(service, &format!("rollouts/{n:010}"));
        let body = self.json(&key, rollout)?;
        self.client
            .kv_put(&key, &body, &PutOptions::default())
            .await?;
        Ok(self
            .client
            .kv_delete(&self.rollout_key(service), Some(modify_index), false)
            .await?)
    }

    /// Queues an operator command for `service`'s rollout.
    pub async fn push_command(&self, service: &str, command: &Command) -> Result<(), StoreError> {
        let key = self.service_key(
            service,
            &format!(
                "commands/{:016}-{:08x}",
                super::plan::now_ms(),
                rand::random::<u32>()
            ),
        );
        let body = self.json(&key, command)?;
        let put = PutOptions {
            cas: Some(0),
            ..PutOptions::default()
        };
        self.client.kv_put(&key, &body, &put).await?;
        Ok(())
    }

    /// Pending commands, oldest first, with their keys and ModifyIndex.
    pub async fn commands(&self, service: &str) -> Result<Vec<(String, u64, Command)>, StoreError> {
        let prefix = self.service_key(service, "commands/");
        let r = self
            .client
            .kv_list(&prefix, &QueryOptions::default())
            .await?;
        let mut out = Vec::new();
        for kv in r.value {
            match serde_json::from_slice::<Command>(&kv.value().unwrap_or_default()) {
                Ok(c) => out.push((kv.key.clone(), kv.modify_index, c)),
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "Dropping an unreadable command.");
                    self.client
                        .kv_delete(&kv.key, Some(kv.modify_index), false)
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes consumed commands.
    pub async fn consume_commands(&self, keys: &[(String, u64)]) -> Result<(), StoreError> {
        for (key, index) in keys {
            self.client.kv_delete(key, Some(*index), false).await?;
        }
        Ok(())
    }

    /// The last stable release of `service`, if recorded.
    pub async fn stable(&self, service: &str) -> Result<Option<StableRef>, StoreError> {
        let key = self.service_key(service, "stable");
        let r = self.client.kv_get(&key, &QueryOptions::default()).await?;
        match r.value {
            None => Ok(None),
            Some(kv) => Ok(Some(
                serde_json::from_slice(&kv.value().unwrap_or_default())
                    .map_err(|source| StoreError::Corrupt { key, source })?,
            )),
        }
    }

    /// Records the stable release of `service`.
    pub async fn set_stable(&self, service: &str, stable: &StableRef) -> Result<(), StoreError> {
        let key = self.service_key(service, "stable");
        let body = self.json(&key, stable)?;
        self.client
            .kv_put(&key, &body, &PutOptions::default())
            .await?;
        Ok(())
    }
}
