# Consul ACL policy of a CI job, role "ci": it publishes a new image and
# waits for its rollout, nothing else.
#
# Who:   the pipeline that bakes the AMI and runs `rollgate publish` then
#        `rollgate status --wait` (agent/src/ops.rs). It cannot approve,
#        reject or command a rollout: a person does that.
# Token: CONSUL_HTTP_TOKEN in the job's environment (a CI secret), or
#        consul.token_file in the rollgate.toml it reads. Create it from
#        this policy (Consul role rollgate-ci).
#
# Derived from agent/src/ops.rs (publish, status)
# (agent/tests/acl_policy.rs fails when code and file drift apart).
#
# Paths assume consul.kv_prefix = "rollgate" and the service `web` published
# as artifact "acmeinc/web".

# publish: write the artifact's trigger (a record write, `PUT /v1/txn`).
key "rollgate/trigger/acmeinc_web" {
  policy = "write"
}

# status --wait: list the service's plans (GET ?recurse) to follow the
# approved one to its outcome.
key_prefix "rollgate/services/web/plans/" {
  policy = "read"
}

# status --wait: read the active rollout.
key "rollgate/services/web/rollout" {
  policy = "read"
}

# publish: the images that failed a rollout (GET ?recurse), so publish says
# whether the coordinator will plan the image.
key_prefix "rollgate/services/web/failed/" {
  policy = "read"
}
