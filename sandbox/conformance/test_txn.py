"""Transactions: `PUT /v1/txn`.

Sources:
- Transaction API: https://developer.hashicorp.com/consul/api-docs/txn
  (hashicorp/consul website/content/api-docs/txn.mdx): "If any operation
  fails, the transaction is rolled back and none of the changes are
  applied"; "a status code of 200 will be returned if it was successfully
  applied, or a status code of 409 will be returned if it was rolled back";
  `Errors` "has entries describing which operations failed ... The OpIndex
  gives the index of the failed operation in the transaction, and What is a
  string with an error message"; the `Value` of KV results "will be null
  for any Verb other than get or get-tree".
- hashicorp/consul agent/consul/state/txn.go (txnKVS, txnDispatch, TxnRW):
  the error texts, every failing operation reported, `Results` nil on
  rollback, and one raft index for the whole transaction.
"""

from __future__ import annotations

import base64
import json

import consul
from support import raw

NODE = "node-1"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kv(verb: str, key: str, value: str | None = None, **extra) -> dict:
    op = {"Verb": verb, "Key": key, **extra}
    if value is not None:
        op["Value"] = b64(value)
    return {"KV": op}


def txn(c: consul.Consul, ops: list[dict]) -> tuple[int, dict]:
    """PUT /v1/txn through py-consul's HTTP layer with the client's token.
    py-consul 1.8.0's `Txn.put` sends no X-Consul-Token header at all (it
    calls `http.put` without `prepare_headers`), so with ACLs on its
    transactions run as the anonymous token and are denied, on a real Consul
    as here."""
    response = raw(c, "PUT", "/v1/txn", body=ops)
    return response.code, json.loads(response.body)


def applied(c: consul.Consul, ops: list[dict]) -> dict:
    code, body = txn(c, ops)
    assert code == 200, body
    return body


def rolled_back(c: consul.Consul, ops: list[dict]) -> dict:
    code, body = txn(c, ops)
    assert code == 409, body
    return body


def test_successful_transaction_applies_every_operation_at_one_index(sandbox):
    """A transaction of writes and reads answers 200 with one result per
    operation that yields an entry (set, get; not check-not-exists), `Value`
    null for verbs other than get/get-tree (txn docs); all writes share one
    raft index (agent/consul/state/txn.go, TxnRW runs every operation at
    `idx`)."""
    c = sandbox.client()
    assert c.kv.put("txn/existing", "old") is True
    result = applied(
        c,
        [
            kv("set", "txn/a", "alpha"),
            kv("set", "txn/b", "beta", Flags=7),
            kv("get", "txn/existing"),
            kv("check-not-exists", "txn/absent"),
        ]
    )
    assert result.get("Errors") in (None, [])
    results = [r["KV"] for r in result["Results"]]
    assert [r["Key"] for r in results] == ["txn/a", "txn/b", "txn/existing"]
    assert results[0]["Value"] is None and results[1]["Value"] is None
    assert results[1]["Flags"] == 7
    assert base64.b64decode(results[2]["Value"]) == b"old"
    assert results[0]["ModifyIndex"] == results[1]["ModifyIndex"], "one raft index for the transaction"
    assert c.kv.get("txn/a")[1]["Value"] == b"alpha"
    assert c.kv.get("txn/b")[1]["Value"] == b"beta"


def test_failed_transaction_is_rolled_back_with_409_errors_and_op_index(sandbox):
    """A transaction whose `cas` operation has a stale index is rolled back:
    409, `Results` null, `Errors` = [{"OpIndex": 1, "What": "failed to set
    key \\"txn/guarded\\", index is stale"}] (txn docs; agent/consul/state/txn.go,
    txnKVS), and neither the earlier nor the later `set` is applied."""
    c = sandbox.client()
    assert c.kv.put("txn/guarded", "v1") is True
    _, entry = c.kv.get("txn/guarded")
    stale = entry["ModifyIndex"]
    assert c.kv.put("txn/guarded", "v2") is True

    body = rolled_back(
        c,
        [
            kv("set", "txn/before", "x"),
            kv("cas", "txn/guarded", "v3", Index=stale),
            kv("set", "txn/after", "y"),
        ],
    )
    assert body["Results"] is None
    assert body["Errors"] == [{"OpIndex": 1, "What": 'failed to set key "txn/guarded", index is stale'}]
    assert c.kv.get("txn/before")[1] is None
    assert c.kv.get("txn/after")[1] is None
    assert c.kv.get("txn/guarded")[1]["Value"] == b"v2"



def test_every_failing_operation_is_reported(sandbox):
    """Every failing operation gets its own entry in `Errors`, in order:
    check-not-exists on an existing key is 'key "<k>" exists', get of a
    missing key is 'key "<k>" doesn't exist' (agent/consul/state/txn.go,
    txnKVS; txnDispatch keeps going after an error and collects them all)."""
    c = sandbox.client()
    assert c.kv.put("txn/present", "here") is True
    body = rolled_back(
        c,
        [
            kv("check-not-exists", "txn/present"),
            kv("set", "txn/new", "n"),
            kv("get", "txn/missing"),
        ],
    )
    assert body["Errors"] == [
        {"OpIndex": 0, "What": 'key "txn/present" exists'},
        {"OpIndex": 2, "What": 'key "txn/missing" doesn\'t exist'},
    ]
    assert c.kv.get("txn/new")[1] is None


def test_lock_check_session_and_unlock_in_transactions(sandbox):
    """`lock` acquires a key with a session, `check-session` fails unless the
    key is locked by that session, `unlock` by another session fails with
    'failed to unlock key "<k>", lock isn't held, or is held by another
    session' (txn docs, "KV Operations"; agent/consul/state/txn.go,
    txnKVS)."""
    agent = sandbox.client(NODE)
    c = sandbox.client()
    mine = agent.session.create(name="mine")
    other = agent.session.create(name="other")

    result = applied(c, [kv("lock", "txn/lock", "leader", Session=mine), kv("check-session", "txn/lock", Session=mine)])
    locked = result["Results"][0]["KV"]
    assert (locked["Session"], locked["LockIndex"]) == (mine, 1)

    body = rolled_back(c, [kv("check-session", "txn/lock", Session=other)])
    assert body["Errors"] == [
        {"OpIndex": 0, "What": f'failed session check for key "txn/lock", current session "{mine}" != "{other}"'}
    ]

    body = rolled_back(c, [kv("unlock", "txn/lock", "x", Session=other)])
    assert body["Errors"] == [
        {
            "OpIndex": 0,
            "What": 'failed to unlock key "txn/lock", lock isn\'t held, or is held by another session',
        }
    ]
    assert c.kv.get("txn/lock")[1]["Session"] == mine
