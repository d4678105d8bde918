# Consul ACL policy of the coordinator (`rollgate coordinator`), role
# "coordinator".
#
# Who:   every coordinator replica (one leads at a time), including the
#        health watcher it embeds and its alert outbox sender.
# Token: consul.token_file in the coordinator's rollgate.toml
#        (consul.token or CONSUL_HTTP_TOKEN work too). In the stack the
#        token is created from the Consul role rollgate-coordinator and
#        stored in the consul-coordinator-token secret (infra/consul-acl.tf).
#
# Derived from agent/src/coordinator/**, chatops/**, rollout/**, notify/**,
# alerting/**, consul/lock.rs, consul/leading.rs and consul/records.rs
# (agent/tests/acl_policy.rs fails when code and file drift apart). Every
# record write is a `PUT /v1/txn`: each KV operation in it needs key:write
# on its key, and the `check-session` operation fencing it with the leader
# lock needs key:read on the lock key.
#
# Paths assume consul.kv_prefix = "rollgate" and one service `web`
# published as artifact "acmeinc/web"; change them with the configuration.

# The leader lock: GET (who holds it, the fence check), PUT ?acquire= and
# ?release=, and the check-session operation of every fenced txn.
key "rollgate/leader" {
  policy = "write"
}

# Plans, the plan counter, the active rollout, the stable version, failed
# images, operator commands (read and consumed) and archived rollouts of
# every configured service: read, listed (blocking) and written by txn.
key_prefix "rollgate/services/" {
  policy = "write"
}

# The publish triggers the planning loops block on (GET ?index=). Written
# by `rollgate publish` (operator, ci), never by the coordinator.
key_prefix "rollgate/trigger/" {
  policy = "read"
}

# The alert outbox: events enqueued (txn cas=0), listed (blocking),
# delivery recorded (txn cas) and delivered entries deleted (txn
# delete-cas).
key_prefix "rollgate/outbox/" {
  policy = "write"
}

# The embedded health watcher's state record (read, written by txn under
# the coordinator's fence).
key "rollgate/watch/state" {
  policy = "write"
}

# The watcher's state when too large for one value: chunks PUT, listed
# and deleted with ?recurse (which needs write on the whole prefix).
key_prefix "rollgate/watch/state-chunks/" {
  policy = "write"
}

# This replica's liveness check (coordinator/liveness.rs): the service
# rollgate-coordinator-<replica> with a TTL check, registered with the
# local agent (PUT /v1/agent/service/register), refreshed (PUT
# /v1/agent/check/update/:id) and deregistered on shutdown. The leader
# lock's session depends on the check, so a dead leader loses the lock
# within seconds.
service "rollgate-coordinator" {
  policy = "write"
}

# The leader lock's session: PUT /v1/session/create, renew and destroy,
# on the node of the Consul agent the coordinator talks to. Replicas run
# on instances whose node names are not known in advance.
session_prefix "" {
  policy = "write"
}

# The rollout gate reads GET /v1/health/service/web; the embedded watcher
# blocks on GET /v1/health/state/any, every check of every service. Both
# are filtered, not refused, without read: a missing rule hides instances
# and checks (X-Consul-Results-Filtered-By-ACLs).
service_prefix "" {
  policy = "read"
}

# The same health answers are filtered by node:read as well (an instance
# or check on a node the token cannot read is removed; serfHealth is a
# node check).
node_prefix "" {
  policy = "read"
}
