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
//! Every record goes through [`Records`]: versioned (each carries its
//! `schema`; see the `Record` impls at the end for what each schema means),
//! and every update of an existing record is a check-and-set on its
//! ModifyIndex: two operators cannot both decide a plan. The leader's store
//! ([`Store::fenced`]) checks the leader lock in the same transaction as each
//! write, so a deposed coordinator cannot write at all. The handover to the
//! rollout is a plan whose decision is `approved` and whose `outcome` is
//! empty.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::machine::{OperatorCommand, Rollout, StableRef};
use super::plan::{Decision, Millis, Plan, parse_plan_id};
use crate::consul::lock::Fence;
use crate::consul::records::{Change, Record, RecordError, Records};
use crate::consul::{self, Client, QueryOptions};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Consul failed.
    #[error(transparent)]
    Consul(#[from] consul::Error),
    /// A record could not be read or written as a record: unreadable, from
    /// a newer rollgate, or refused because this replica lost the lock.
    #[error(transparent)]
    Record(RecordError),
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

impl From<RecordError> for StoreError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Consul(e) => StoreError::Consul(e),
            RecordError::Contended(key) => StoreError::Contended(key),
            other => StoreError::Record(other),
        }
    }
}

impl StoreError {
    /// Whether this replica lost the leader lock (stop acting, do not retry).
    pub fn is_fence_lost(&self) -> bool {
        matches!(self, StoreError::Record(RecordError::FenceLost { .. }))
    }
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
    records: Records,
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
    /// Records under `prefix` through `client`, unfenced (operators).
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            records: Records::new(client),
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The same records, every write fenced by the leader lock.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            records: self.records.fenced(fence),
            prefix: self.prefix.clone(),
        }
    }

    /// The Consul client.
    pub fn client(&self) -> &Client {
        self.records.client()
    }

    /// The leader lock key.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The trigger key of an artifact.
    pub fn trigger_key(&self, artifact: &str) -> String {
        format!("{}/trigger/{}", self.prefix, artifact_key(artifact))
    }

    /// The key of `service`'s plan counter: it changes whenever anyone
    /// stores a plan (the coordinator, `rollgate rollback`, `publish
    /// --force`).
    pub fn seq_key(&self, service: &str) -> String {
        self.service_key(service, "seq")
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
        self.records
            .put(&self.trigger_key(artifact), trigger)
            .await?;
        Ok(())
    }

    /// The last publish of `artifact`, if any.
    pub async fn trigger(&self, artifact: &str) -> Result<Option<Trigger>, StoreError> {
        let key = self.trigger_key(artifact);
        Ok(self.records.get::<Trigger>(&key).await?.map(|v| v.value))
    }

    /// Allocates the next plan ID of `service`.
    pub async fn next_plan_id(&self, service: &str) -> Result<String, StoreError> {
        let key = self.seq_key(service);
        let n = self
            .records
            .update(&key, |current: Option<_>| {
                let next =
                    current.map_or(0, |c: crate::consul::records::Versioned<Seq>| c.value.0) + 1;
                Change::Write(Seq(next), next)
            })
            .await?;
        Ok(format!("{service}-{n}"))
    }

    fn plan_key(&self, id: &str) -> Result<String, StoreError> {
        let (service, n) = parse_plan_id(id).ok_or_else(|| StoreError::BadPlanId(id.into()))?;
        Ok(self.service_key(service, &format!("plans/{n:010}")))
    }

    /// Stores a new plan; `false` when one with its ID exists.
    pub async fn create_plan(&self, plan: &Plan) -> Result<bool, StoreError> {
        let key = self.plan_key(&plan.id)?;
        Ok(self.records.create(&key, plan).await?.is_some())
    }

    /// A plan and the ModifyIndex to update it with.
    pub async fn plan(&self, id: &str) -> Result<(Plan, u64), StoreError> {
        let key = self.plan_key(id)?;
        let v = self
            .records
            .get::<Plan>(&key)
            .await?
            .ok_or_else(|| StoreError::NoPlan(id.into()))?;
        Ok((v.value, v.index))
    }

    /// Writes `plan` if its record is still at `modify_index`.
    pub async fn update_plan(&self, plan: &Plan, modify_index: u64) -> Result<bool, StoreError> {
        let key = self.plan_key(&plan.id)?;
        Ok(self
            .records
            .replace(&key, plan, modify_index)
            .await?
            .is_some())
    }

    /// Every plan of `service`, oldest first, with its ModifyIndex. A record
    /// that cannot be read is skipped with a warning naming it and why (one
    /// bad record must not stop the service); a record written by a newer
    /// rollgate is an error: acting without it could contradict it.
    pub async fn plans(&self, service: &str) -> Result<Vec<(Plan, u64)>, StoreError> {
        let prefix = self.service_key(service, "plans/");
        let mut plans = Vec::new();
        for (key, r) in self.records.list::<Plan>(&prefix).await? {
            match r {
                Ok(v) => plans.push((v.value, v.index)),
                Err(e @ RecordError::TooNew { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "Skipping an unreadable plan record.")
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
        let key = self.plan_key(id)?;
        let mut missing = false;
        let r = self
            .records
            .update(
                &key,
                |current: Option<crate::consul::records::Versioned<Plan>>| {
                    let Some(v) = current else {
                        missing = true;
                        return Change::Keep(None);
                    };
                    let mut plan = v.value;
                    if !plan.is_pending(now) {
                        return Change::Keep(Some(Err(plan)));
                    }
                    plan.decision = decision.clone();
                    Change::Write(plan.clone(), Some(Ok(plan)))
                },
            )
            .await?;
        match r {
            Some(r) => Ok(r),
            None if missing => Err(StoreError::NoPlan(id.into())),
            None => Err(StoreError::Contended(key)),
        }
    }

    /// Records the outcome of a plan's rollout (once: a recorded outcome is
    /// kept).
    pub async fn set_outcome(
        &self,
        id: &str,
        outcome: &super::plan::Outcome,
    ) -> Result<(), StoreError> {
        let key = self.plan_key(id)?;
        self.records
            .update(
                &key,
                |current: Option<crate::consul::records::Versioned<Plan>>| match current {
                    Some(v) if v.value.outcome.is_none() => {
                        let mut plan = v.value;
                        plan.outcome = Some(outcome.clone());
                        Change::Write(plan, ())
                    }
                    _ => Change::Keep(()),
                },
            )
            .await?;
        Ok(())
    }

    /// Images that failed a rollout of `service`. Marks hidden by ACLs are
    /// an error, never "none failed".
    pub async fn failed_images(&self, service: &str) -> Result<BTreeSet<String>, StoreError> {
        let prefix = self.service_key(service, "failed/");
        let r = self
            .client()
            .kv_list(&prefix, &QueryOptions::default())
            .await?;
        if r.meta.filtered_by_acls {
            return Err(RecordError::Hidden { prefix }.into());
        }
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
        self.records
            .put(
                &key,
                &FailedImage {
                    reason: reason.to_owned(),
                },
            )
            .await?;
        Ok(())
    }

    /// The active rollout of `service` and its ModifyIndex, if any.
    pub async fn rollout(&self, service: &str) -> Result<Option<(Rollout, u64)>, StoreError> {
        let key = self.rollout_key(service);
        Ok(self
            .records
            .get::<Rollout>(&key)
            .await?
            .map(|v| (v.value, v.index)))
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
        Ok(self.records.replace(&key, rollout, modify_index).await?)
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
        self.records.put(&key, rollout).await?;
        Ok(self
            .records
            .delete(&self.rollout_key(service), Some(modify_index))
            .await?)
    }

    /// Queues an operator command for `service`'s rollout.
    pub async fn push_command(
        &self,
        service: &str,
        command: &OperatorCommand,
    ) -> Result<(), StoreError> {
        let key = self.service_key(
            service,
            &format!(
                "commands/{:016}-{:08x}",
                super::plan::now_ms(),
                rand::random::<u32>()
            ),
        );
        self.records.create(&key, command).await?;
        Ok(())
    }

    /// Pending commands, oldest first, with their keys and ModifyIndex, and
    /// the listing's index (a blocking query on [`commands_prefix`](Self::commands_prefix)
    /// from it wakes on the next command). An unreadable command is dropped
    /// with a warning (it cannot be obeyed); one from a newer rollgate is an
    /// error.
    pub async fn commands(
        &self,
        service: &str,
    ) -> Result<(Vec<(String, u64, OperatorCommand)>, u64), StoreError> {
        self.commands_with(service, &QueryOptions::default()).await
    }

    /// [`commands`](Self::commands) with query options: a blocking query
    /// from the index it answered waits for the next change.
    pub async fn commands_with(
        &self,
        service: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<(String, u64, OperatorCommand)>, u64), StoreError> {
        let prefix = self.commands_prefix(service);
        let mut out = Vec::new();
        let (listed, index) = self
            .records
            .list_indexed_with::<OperatorCommand>(&prefix, opts)
            .await?;
        for (key, r) in listed {
            match r {
                Ok(v) => out.push((key, v.index, v.value)),
                Err(e @ RecordError::TooNew { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "Dropping an unreadable command.");
                    self.records.delete(&key, None).await?;
                }
            }
        }
        Ok((out, index))
    }

    /// Prefix of a service's pending operator commands (with the slash).
    pub fn commands_prefix(&self, service: &str) -> String {
        self.service_key(service, "commands/")
    }

    /// Deletes consumed commands.
    pub async fn consume_commands(&self, keys: &[(String, u64)]) -> Result<(), StoreError> {
        for (key, index) in keys {
            self.records.delete(key, Some(*index)).await?;
        }
        Ok(())
    }

    /// The last stable release of `service`, if recorded.
    pub async fn stable(&self, service: &str) -> Result<Option<StableRef>, StoreError> {
        let key = self.service_key(service, "stable");
        Ok(self.records.get::<StableRef>(&key).await?.map(|v| v.value))
    }

    /// Records the stable release of `service`.
    pub async fn set_stable(&self, service: &str, stable: &StableRef) -> Result<(), StoreError> {
        let key = self.service_key(service, "stable");
        self.records.put(&key, stable).await?;
        Ok(())
    }
}

/// The last plan number of a service: a bare JSON number (schema 1, no
/// room for a schema field; a change of shape would take a new key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Seq(u64);

impl Record for Seq {
    const KIND: &'static str = "plan sequence";
    const SCHEMA: u32 = 1;
}

/// Why an image was marked failed (the key names the image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FailedImage {
    /// The failure reason of the rollout that marked it.
    reason: String,
}

impl Record for FailedImage {
    const KIND: &'static str = "failed-image mark";
    const SCHEMA: u32 = 1;
}

/// Schema 1: the first releases, whose plans stored the rollout
/// parameters in the configuration's form (`"min_healthy_time": "10s"`).
/// Schema 2: the core's `Params` (`"min_healthy_time_ms": 10000`), and the
/// outcome's `result` limited to the four outcome words.
impl Record for Plan {
    const KIND: &'static str = "plan";
    const SCHEMA: u32 = 2;

    fn upgrade(schema: u32, mut value: Value) -> Result<Value, String> {
        if schema != 1 {
            return Err(format!("no conversion from schema {schema}"));
        }
        let Some(map) = value.as_object_mut() else {
            return Err("not a JSON object".into());
        };
        if let Some(old) = map.remove("params") {
            let params = crate::coordinator::config::params_toml::deserialize(old)
                .map_err(|e| format!("params (schema 1): {e}"))?;
            let params = serde_json::to_value(params).map_err(|e| e.to_string())?;
            map.insert("params".into(), params);
        }
        Ok(value)
    }
}

/// Schema 1: as written since the first release.
impl Record for Rollout {
    const KIND: &'static str = "rollout";
    const SCHEMA: u32 = 1;
}

/// Schema 1: as written since the first release.
impl Record for StableRef {
    const KIND: &'static str = "stable version";
    const SCHEMA: u32 = 1;
}

/// Schema 1: as written since the first release.
impl Record for OperatorCommand {
    const KIND: &'static str = "operator command";
    const SCHEMA: u32 = 1;
}

/// Schema 1: as written since the first release.
impl Record for Trigger {
    const KIND: &'static str = "publish trigger";
    const SCHEMA: u32 = 1;
}

#[cfg(test)]
mod tests;
