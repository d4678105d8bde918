# Consul ACL policy of the standalone health watcher (`rollgate watch`),
# role "watcher".
#
# Who:   `rollgate watch` replicas (one leads at a time through
#        <kv_prefix>/watch/leader), with their alert outbox sender. A
#        coordinator runs the same watcher embedded and needs no watcher
#        token (coordinator.hcl grants what it reads).
# Token: consul.token_file in the watcher's rollgate.toml (consul.token or
#        CONSUL_HTTP_TOKEN work too). Create it from this policy (Consul
#        role rollgate-watcher, infra/consul-acl.tf).
#
# Derived from agent/src/alerting/**, notify/sender.rs and notify/outbox.rs,
# consul/lock.rs and consul/leading.rs (agent/tests/acl_policy.rs fails
# when code and file drift apart). Record writes are `PUT /v1/txn`; each
# KV operation needs key:write on its key, the fence's check-session
# operation key:read on the lock key.
#
# Paths assume consul.kv_prefix = "rollgate".

# The watcher's leader lock: GET, PUT ?acquire= and ?release=, and the
# check-session operation fencing the state writes.
key "rollgate/watch/leader" {
  policy = "write"
}

# The watcher's state record (read, written by txn with check-and-set).
key "rollgate/watch/state" {
  policy = "write"
}

# The state's chunks when too large for one value: PUT, listed and deleted
# with ?recurse (which needs write on the whole prefix).
key_prefix "rollgate/watch/state-chunks/" {
  policy = "write"
}

# The alert outbox: events enqueued (txn cas=0), listed (blocking),
# deliveries recorded (txn cas) and delivered entries deleted.
key_prefix "rollgate/outbox/" {
  policy = "write"
}

# The leader lock's session: create, renew, destroy, on the node of the
# Consul agent the watcher talks to (not known in advance).
session_prefix "" {
  policy = "write"
}

# GET /v1/health/state/any (blocking): every check of every service. It is
# filtered, not refused, without read: a missing rule hides checks
# (X-Consul-Results-Filtered-By-ACLs), which must not read as resolved.
service_prefix "" {
  policy = "read"
}

# The same answer is filtered by node:read too (serfHealth and the node of
# each service check).
node_prefix "" {
  policy = "read"
}
