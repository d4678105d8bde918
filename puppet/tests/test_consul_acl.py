#!/usr/bin/env python3
"""Tests of rollgate-consul-acl (run by .ci/iac-check).

The program runs against a small stand-in of Consul's ACL HTTP API on
loopback and stand-ins of the Secrets Manager and EC2 clients. What is
checked is what the stack relies on: one run sets everything up, a second
run changes nothing (servers run it every minute, several at once), a
changed policy file updates its policy, tokens of instances that are gone
are deleted with their secrets, and every node token carries exactly its
own node identity.

Usage: test_consul_acl.py
"""

import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import tempfile
import threading
import unittest
import uuid
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "modules", "consul_acl", "files", "rollgate-consul-acl")
MANAGEMENT = "11111111-2222-3333-4444-555555555555"


def load_program():
    loader = importlib.machinery.SourceFileLoader("rollgate_consul_acl", PROGRAM)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


acl = load_program()


class FakeConsul:
    """Consul's ACL endpoints as the program uses them, in memory."""

    def __init__(self):
        self.policies, self.roles, self.tokens = {}, {}, {}
        self.agent_token = None
        self.writes = 0
        self.lock = threading.Lock()

    def handle(self, method, path, body):
        if path == "/v1/status/leader":
            return 200, "10.0.0.1:8300"
        if path == "/v1/agent/self":
            return 200, {"Config": {"NodeName": "consul-server-a"}}
        if method != "GET":
            self.writes += 1
        if path == "/v1/agent/token/agent" and method == "PUT":
            self.agent_token = body["Token"]
            return 200, None
        for kind, store in (("policy", self.policies), ("role", self.roles)):
            if path.startswith(f"/v1/acl/{kind}/name/") and method == "GET":
                name = path.rsplit("/", 1)[1]
                found = [v for v in store.values() if v["Name"] == name]
                return (200, found[0]) if found else (404, "ACL not found")
            if path == f"/v1/acl/{kind}" and method == "PUT":
                item = dict(body, ID=str(uuid.uuid4()))
                store[item["ID"]] = item
                return 200, item
            if path.startswith(f"/v1/acl/{kind}/") and method == "PUT":
                store[body["ID"]] = body
                return 200, body
        if path == "/v1/acl/tokens" and method == "GET":
            return 200, list(self.tokens.values())
        if path == "/v1/acl/token" and method == "PUT":
            if body["AccessorID"] in self.tokens:
                return 500, "AccessorID is already in use"
            token = dict(body, SecretID=body.get("SecretID") or str(uuid.uuid4()))
            self.tokens[token["AccessorID"]] = token
            return 200, token
        if path.startswith("/v1/acl/token/"):
            accessor = path.rsplit("/", 1)[1]
            if method == "GET":
                return (200, self.tokens[accessor]) if accessor in self.tokens else (403, "ACL not found")
            if method == "PUT":
                self.tokens[accessor] = dict(body, SecretID=self.tokens[accessor]["SecretID"])
                return 200, self.tokens[accessor]
            if method == "DELETE":
                return (200, True) if self.tokens.pop(accessor, None) else (404, "not found")
        return 400, f"unexpected {method} {path}"


def serve(consul):
    class Handler(BaseHTTPRequestHandler):
        def do(self):
            if self.headers.get("X-Consul-Token") != MANAGEMENT:
                self.send_response(403)
                self.end_headers()
                self.wfile.write(b"ACL not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            with consul.lock:
                status, answer = consul.handle(self.command, self.path, body)
            # Consul answers JSON on success and plain text on errors.
            data = json.dumps(answer).encode() if status == 200 else str(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class NotFound(Exception):
    pass


class Exists(Exception):
    pass


class FakeSecrets:
    class exceptions:
        ResourceNotFoundException = NotFound
        ResourceExistsException = Exists

    def __init__(self):
        self.values, self.tags, self.deleted = {}, {}, []

    def get_secret_value(self, SecretId):
        if SecretId not in self.values:
            raise NotFound(SecretId)
        return {"SecretString": self.values[SecretId]}

    def put_secret_value(self, SecretId, SecretString, ClientRequestToken=None):
        self.values[SecretId] = SecretString

    def describe_secret(self, SecretId):
        if SecretId not in self.tags:
            raise NotFound(SecretId)
        return {"Tags": [{"Key": k, "Value": v} for k, v in self.tags[SecretId].items()]}

    def create_secret(self, Name, SecretString, Tags, Description, ClientRequestToken):
        self.values[Name] = SecretString
        self.tags[Name] = {t["Key"]: t["Value"] for t in Tags}

    def tag_resource(self, SecretId, Tags):
        self.tags[SecretId].update({t["Key"]: t["Value"] for t in Tags})

    def delete_secret(self, SecretId, ForceDeleteWithoutRecovery):
        if SecretId not in self.values:
            raise NotFound(SecretId)
        del self.values[SecretId]
        self.tags.pop(SecretId, None)
        self.deleted.append(SecretId)


class FakeEc2:
    def __init__(self, instances):
        self.instances = instances  # instance id -> group

    def get_paginator(self, name):
        assert name == "describe_instances"
        fake = self

        class Paginator:
            def paginate(self, Filters):
                groups = next(f["Values"] for f in Filters if f["Name"] == "tag:aws:autoscaling:groupName")
                found = [{"InstanceId": i, "Tags": [{"Key": "aws:autoscaling:groupName", "Value": g}]}
                         for i, g in fake.instances.items() if g in groups]
                return [{"Reservations": [{"Instances": found}]}]

        return Paginator()


class ConvergeTest(unittest.TestCase):
    def setUp(self):
        self.consul = FakeConsul()
        self.server = serve(self.consul)
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        token_file = os.path.join(self.dir.name, "management-token")
        with open(token_file, "w", encoding="utf-8") as handle:
            handle.write(MANAGEMENT + "\n")
        self.config = {
            "region": "eu-west-1",
            "datacenter": "dc1",
            "consul_address": f"http://127.0.0.1:{self.server.server_address[1]}",
            "management_token_file": token_file,
            "policy_prefix": "rollgate-",
            "policies": {"agent": 'service "web" { policy = "write" }', "coordinator": 'key_prefix "rollgate/" {}'},
            "role_tokens": [{"role": "coordinator", "description": "rollgate coordinator", "secret_id": "arn:coord"}],
            "node_tokens": {
                "secret_prefix": "rollgate-prod/node-token/",
                "tags": {"Project": "rollgate"},
                "groups": [
                    {"auto_scaling_group": "web", "reader_role_id": "AROAWEB", "service_identities": ["web"],
                     "roles": ["agent"]},
                    {"auto_scaling_group": "coord", "reader_role_id": "AROACOORD", "service_identities": [],
                     "roles": []},
                ],
            },
        }
        self.secrets = FakeSecrets()
        self.ec2 = FakeEc2({"i-0aaaaaaaaaaaaaaa1": "web", "i-0aaaaaaaaaaaaaaa2": "web", "i-0ccccccccccccccc1": "coord"})
        acl.aws_clients = lambda region: (self.secrets, self.ec2)

    def run_once(self):
        with redirect_stdout(io.StringIO()) as out:
            acl.converge(self.config)
        return out.getvalue()

    def node_token(self, instance):
        return self.consul.tokens[acl.accessor_for("instance", instance)]

    def test_first_run_sets_everything_up(self):
        self.run_once()
        self.assertEqual(sorted(p["Name"] for p in self.consul.policies.values()),
                         ["rollgate-agent", "rollgate-coordinator"])
        self.assertEqual(sorted(r["Name"] for r in self.consul.roles.values()),
                         ["rollgate-agent", "rollgate-coordinator"])
        web = self.node_token("i-0aaaaaaaaaaaaaaa1")
        self.assertEqual(web["NodeIdentities"], [{"NodeName": "i-0aaaaaaaaaaaaaaa1", "Datacenter": "dc1"}])
        self.assertEqual(web["ServiceIdentities"], [{"ServiceName": "web"}])
        self.assertEqual(web["Roles"], [{"Name": "rollgate-agent"}])
        coordinator_node = self.node_token("i-0ccccccccccccccc1")
        self.assertEqual(coordinator_node["ServiceIdentities"], [])
        self.assertEqual(coordinator_node["Roles"], [])
        name = "rollgate-prod/node-token/i-0aaaaaaaaaaaaaaa1"
        self.assertEqual(self.secrets.values[name], web["SecretID"])
        self.assertEqual(self.secrets.tags[name]["rollgate:reader"], "AROAWEB:i-0aaaaaaaaaaaaaaa1")
        # The coordinator's role token uses the secret id stored in Secrets Manager.
        role = self.consul.tokens[acl.accessor_for("role", "coordinator")]
        self.assertEqual(role["SecretID"], self.secrets.values["arn:coord"])
        self.assertEqual(role["Roles"], [{"Name": "rollgate-coordinator"}])
        server = self.consul.tokens[acl.accessor_for("server", "consul-server-a")]
        self.assertEqual(self.consul.agent_token, server["SecretID"])

    def test_second_run_changes_nothing(self):
        self.run_once()
        tokens = json.dumps(self.consul.tokens, sort_keys=True)
        writes = self.consul.writes
        output = self.run_once()
        self.assertEqual(json.dumps(self.consul.tokens, sort_keys=True), tokens)
        # Only the agent token is set again (ACL token persistence is off).
        self.assertEqual(self.consul.writes - writes, 1, output)

    def test_an_existing_role_token_secret_is_kept(self):
        self.secrets.values["arn:coord"] = "99999999-8888-7777-6666-555555555555"
        self.run_once()
        role = self.consul.tokens[acl.accessor_for("role", "coordinator")]
        self.assertEqual(role["SecretID"], "99999999-8888-7777-6666-555555555555")

    def test_a_changed_policy_file_updates_the_policy(self):
        self.run_once()
        self.config["policies"]["agent"] = 'service "web" { policy = "read" }'
        self.assertIn("Updated policy rollgate-agent", self.run_once())
        rules = [p["Rules"] for p in self.consul.policies.values() if p["Name"] == "rollgate-agent"]
        self.assertEqual(rules, ['service "web" { policy = "read" }'])

    def test_tokens_of_instances_that_are_gone_are_deleted(self):
        self.run_once()
        del self.ec2.instances["i-0aaaaaaaaaaaaaaa2"]
        self.ec2.instances["i-0bbbbbbbbbbbbbbb3"] = "web"
        output = self.run_once()
        self.assertIn("Deleted the node token of i-0aaaaaaaaaaaaaaa2", output)
        self.assertNotIn(acl.accessor_for("instance", "i-0aaaaaaaaaaaaaaa2"), self.consul.tokens)
        self.assertEqual(self.secrets.deleted, ["rollgate-prod/node-token/i-0aaaaaaaaaaaaaaa2"])
        self.assertIn(acl.accessor_for("instance", "i-0bbbbbbbbbbbbbbb3"), self.consul.tokens)
        self.assertIn(acl.accessor_for("instance", "i-0aaaaaaaaaaaaaaa1"), self.consul.tokens)

    def test_a_missing_policy_file_does_not_keep_nodes_from_their_tokens(self):
        del self.config["policies"]["coordinator"]
        with self.assertRaisesRegex(acl.ConsulError, "no policy file coordinator.hcl"):
            self.run_once()
        self.assertIn(acl.accessor_for("instance", "i-0aaaaaaaaaaaaaaa1"), self.consul.tokens)
        self.assertNotIn(acl.accessor_for("role", "coordinator"), self.consul.tokens)

    def test_no_secret_value_is_printed(self):
        output = self.run_once() + self.run_once()
        for token in self.consul.tokens.values():
            self.assertNotIn(token["SecretID"], output)
        self.assertNotIn(MANAGEMENT, output)

    def test_check_mode_validates_without_contacting_anything(self):
        path = os.path.join(self.dir.name, "config.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.config, handle)
        with redirect_stdout(io.StringIO()):
            self.assertEqual(acl.main(["--check", path]), 0)
        self.config["node_tokens"]["secret_prefix"] = "no-slash"
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.config, handle)
        with redirect_stdout(io.StringIO()), open(os.devnull, "w", encoding="utf-8") as null:
            stderr, sys.stderr = sys.stderr, null
            try:
                self.assertEqual(acl.main(["--check", path]), 2)
            finally:
                sys.stderr = stderr


if __name__ == "__main__":
    unittest.main(verbosity=1)
