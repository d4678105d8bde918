#!/usr/bin/env python3
"""Checks the files role::web renders (run by .ci/iac-check).

Reads the output of `puppet apply --noop tests/extract.pp` on stdin, decodes
the EXTRACT notices and checks what the Rust code and systemd depend on:

  * /etc/rollgate/rollgate.toml is valid TOML with exactly the documented
    tables and keys, and the values the role passes;
  * rollgate-agent.service starts the agent as documented, is ordered after
    Consul and the app, and its stop timeout is longer than the drain time;
  * web.service is hardened and runs the app on loopback with WEB_VERSION;
  * the Apache vhost proxies / and /health to the app;
  * the Consul agent joins with cloud auto-join and verifies TLS.

Usage: check_rendered.py EXPECTED_VERSION < noop-output
"""

import base64
import re
import sys
import tomllib

AGENT_KEYS = {
    "consul": {"address", "token_file", "ca_file", "timeout"},
    "log": {"format", "level"},
    "agent": {
        "service_name", "service_port", "tags", "artifact", "expected_version", "app_url", "check_url",
        "check_interval", "check_timeout", "ttl", "deregister_critical_after", "drain_time", "ready_listen",
    },
}
DURATION = re.compile(r"\A([0-9]+)(ms|s|m|h)\Z")
HARDENING = [
    "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
    "CapabilityBoundingSet=\n", "Restart=always",
]


def seconds(duration):
    amount, unit = DURATION.match(duration).groups()
    return int(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def unit_values(text, key):
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def main(expected_version):
    files = {}
    for line in sys.stdin:
        match = re.search(r"EXTRACT (\S+) ([A-Za-z0-9+/=]+)", line)
        if match:
            files[match.group(1)] = base64.b64decode(match.group(2)).decode("utf-8")
    problems = []

    toml_text = files.get("/etc/rollgate/rollgate.toml")
    config = {}
    if toml_text is None:
        problems.append("rollgate.toml was not rendered")
    else:
        try:
            config = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as err:
            problems.append(f"rollgate.toml is not valid TOML: {err}")
    if config:
        if set(config) != set(AGENT_KEYS):
            problems.append(f"rollgate.toml tables are {sorted(config)}, expected {sorted(AGENT_KEYS)}")
        for table, keys in AGENT_KEYS.items():
            if set(config.get(table, {})) != keys:
                problems.append(f"rollgate.toml [{table}] keys are {sorted(config.get(table, {}))}, expected {sorted(keys)}")
        agent = config.get("agent", {})
        expect = {
            ("consul", "address"): "http://127.0.0.1:8500",
            ("log", "format"): "json",
            ("agent", "service_name"): "web",
            ("agent", "service_port"): 80,
            ("agent", "tags"): ["web"],
            ("agent", "artifact"): "acmeinc/web",
            ("agent", "expected_version"): expected_version,
            ("agent", "app_url"): "http://127.0.0.1:8080",
            ("agent", "check_url"): "http://127.0.0.1:80/health",
            # infra/alb.tf health-checks this port (var.agent_ready_port).
            ("agent", "ready_listen"): "0.0.0.0:9102",
        }
        for (table, key), value in expect.items():
            if config.get(table, {}).get(key) != value:
                problems.append(f"rollgate.toml {table}.{key} is {config.get(table, {}).get(key)!r}, expected {value!r}")
        for key in ("check_interval", "check_timeout", "ttl", "deregister_critical_after", "drain_time"):
            if not DURATION.match(str(agent.get(key, ""))):
                problems.append(f"rollgate.toml agent.{key} = {agent.get(key)!r} is not a duration like \"15s\"")

    unit = files.get("/etc/systemd/system/rollgate-agent.service", "")
    if unit_values(unit, "ExecStart") != ["/usr/local/bin/rollgate --config /etc/rollgate/rollgate.toml agent --log-format json"]:
        problems.append(f"rollgate-agent.service ExecStart is {unit_values(unit, 'ExecStart')}")
    if unit_values(unit, "KillSignal") != ["SIGTERM"]:
        problems.append("rollgate-agent.service must stop with KillSignal=SIGTERM")
    for key in ("After", "Wants"):
        units = " ".join(unit_values(unit, key)).split()
        for needed in ("consul.service", "web.service"):
            if needed not in units:
                problems.append(f"rollgate-agent.service {key}= lacks {needed}")
    stop = unit_values(unit, "TimeoutStopSec")
    drain = config.get("agent", {}).get("drain_time", "")
    if not stop or not DURATION.match(str(drain)) or not int(stop[0]) > seconds(drain):
        problems.append(f"rollgate-agent.service TimeoutStopSec={stop} must be longer than drain_time {drain!r}")

    web = files.get("/etc/systemd/system/web.service", "")
    if unit_values(web, "ExecStart") != ["/usr/local/bin/web --listen 127.0.0.1:8080"]:
        problems.append(f"web.service ExecStart is {unit_values(web, 'ExecStart')}")
    if f"WEB_VERSION={expected_version}" not in unit_values(web, "Environment"):
        problems.append("web.service does not set WEB_VERSION")
    for setting in HARDENING:
        if setting not in web + "\n":
            problems.append(f"web.service lacks {setting.strip()}")

    vhost = files.get("/etc/apache2/sites-available/web.conf", "")
    for needed in ("<VirtualHost *:80>", "ProxyPass        /health http://127.0.0.1:8080/health",
                   "ProxyPass        /       http://127.0.0.1:8080/", "CustomLog "):
        if needed not in vhost:
            problems.append(f"the Apache vhost lacks {needed!r}")

    consul = files.get("/etc/consul.d/consul.hcl", "")
    consul_needs = [
        'retry_join = ["provider=aws tag_key=',
        "verify_outgoing = true",
        "verify_server_hostname = true",
        'ca_file         = "/etc/consul.d/tls/ca.pem"',
    ]
    for needed in consul_needs:
        if needed not in consul:
            problems.append(f"consul.hcl lacks {needed!r}")

    consul_unit = files.get("/etc/systemd/system/consul.service", "")
    if "node-secrets.service" not in unit_values(consul_unit, "Requires") or \
            "node-secrets.service" not in " ".join(unit_values(consul_unit, "After")).split():
        problems.append("consul.service must have Requires= and After= node-secrets.service (never start without its secrets)")
    path_unit = files.get("/etc/systemd/system/consul-secrets.path", "")
    for needed in ("/etc/consul.d/acl-token.hcl", "/etc/consul.d/gossip.hcl"):
        if needed not in unit_values(path_unit, "PathChanged"):
            problems.append(f"consul-secrets.path does not watch {needed}: a rotated secret would not restart Consul")
    if unit_values(files.get("/etc/systemd/system/consul-secrets.service", ""), "ExecStart") != \
            ["/bin/systemctl try-restart consul.service"]:
        problems.append("consul-secrets.service must try-restart consul.service")
    acl_unit = files.get("/etc/systemd/system/rollgate-consul-acl.service", "")
    if "ConditionPathExists=/etc/rollgate/consul-acl/config.json" not in acl_unit:
        problems.append("rollgate-consul-acl.service must only run where the servers' user data configured it")

    if problems:
        for problem in problems:
            print(f"FAIL  puppet render: {problem}")
        return 1
    print(f"ok    puppet render: rollgate.toml has exactly the documented keys; units, vhost and consul.hcl as expected "
          f"(TimeoutStopSec={stop[0]}s > drain_time {drain})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
