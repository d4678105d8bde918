"""Fixtures of the Consul conformance suite.

Every test gets a fresh sandbox Consul: the real `sandbox` binary named by
the environment variable SANDBOX_BIN, started as

    sandbox consul --listen 127.0.0.1:0 --nodes 1 --session-ttl-min 1s

with a management token (given through SANDBOX_CONSUL_ACL_TOKEN, so it never
shows in a process list), which turns ACL enforcement on as in production
(`acl.enabled = true`, `default_policy = "deny"`). The server prints one JSON
line with its addresses once it listens; the fixture reads it, hands the
tests py-consul clients, and stops the server with SIGTERM afterwards.

The server listener is the agent of node `server-1`; `node-1` is a client
agent with its own listener. Services are registered on `node-1`, as the
rollgate agent does on an instance.

`--session-ttl-min 1s` mirrors Consul's `session_ttl_min` agent option
(default 10s; https://developer.hashicorp.com/consul/docs/reference/agent/configuration-file/general#session_ttl_min)
so that session TTL expiry can be observed in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pytest

# py-consul reads these to pick its address and token; the suite names both
# explicitly, so nothing from the caller's environment may leak in.
for _name in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"):
    os.environ.pop(_name, None)

import consul  # noqa: E402  (after the environment is cleaned)

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
SESSION_TTL_MIN = "1s"
STARTUP_TIMEOUT = 30.0


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        pins[name.strip()] = version.strip()
    return pins


def pytest_configure(config: pytest.Config) -> None:
    """Refuses to run with other versions than the pinned ones: the suite was
    written against py-consul's source at that version."""
    wrong = []
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            wrong.append(f"{name}=={version} is required, found {installed}")
    if wrong:
        raise pytest.UsageError(
            "conformance suite: "
            + "; ".join(wrong)
            + f". Install the pins with: python3 -m pip install -r {REQUIREMENTS}"
        )
    if not os.environ.get("SANDBOX_BIN"):
        raise pytest.UsageError(
            "conformance suite: set SANDBOX_BIN to the sandbox binary "
            "(for example target/debug/sandbox after `cargo build -p sandbox`)"
        )


@dataclass
class Sandbox:
    """A running sandbox Consul and the way to reach it."""

    process: subprocess.Popen
    http: str
    nodes: dict[str, str]
    management_token: str
    stderr_path: Path
    _clients: list[consul.Consul] = field(default_factory=list)

    def client(self, node: str | None = None, token: str | None | object = ...) -> consul.Consul:
        """A py-consul client of `node`'s agent (the server agent by default),
        with the management token unless `token` says otherwise (None: no
        token at all, the anonymous token)."""
        addr = self.nodes[node] if node else self.http
        host, port = addr.rsplit(":", 1)
        secret = self.management_token if token is ... else token
        c = consul.Consul(host=host, port=int(port), token=secret)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.http.session.close()


def _read_ready_line(process: subprocess.Popen, timeout: float) -> str:
    box: dict[str, Any] = {}

    def read() -> None:
        box["line"] = process.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    line = box.get("line", "")
    if not line:
        raise RuntimeError(f"sandbox consul printed no ready line within {timeout}s (exit code {process.poll()})")
    return line


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh sandbox Consul with ACLs on, stopped after the test."""
    binary = os.environ["SANDBOX_BIN"]
    token = str(uuid.uuid4())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_CONSUL_")}
    env["SANDBOX_CONSUL_ACL_TOKEN"] = token
    env.setdefault("RUST_LOG", "info")
    stderr_path = tmp_path / "sandbox-consul.stderr"
    stderr = stderr_path.open("wb")
    process = subprocess.Popen(
        [
            binary,
            "consul",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "1",
            "--session-ttl-min",
            SESSION_TTL_MIN,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        text=True,
    )
    try:
        ready = json.loads(_read_ready_line(process, STARTUP_TIMEOUT))
        nodes = {n["name"]: n["addr"] for n in ready["nodes"]}
        world = Sandbox(process, ready["http"], nodes, token, stderr_path)
        assert "node-1" in world.nodes, f"expected a client node in {ready}"
        yield world
        world.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stderr.close()
        if process.stdout:
            process.stdout.close()
