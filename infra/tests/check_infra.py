#!/usr/bin/env python3
"""Static and offline checks of infra/ (run by .ci/iac-check).

Terraform providers cannot be downloaded on CI machines, so this checks what
can be checked without them:

  parse      every .tf file parses as HCL2 (python-hcl2)
  variables  every variable has a type and a description; every var.X used is
             declared and every declared variable is used
  iam        the coordinator action lists exist between their markers, as
             plain string lists with the right service prefixes
  ownership  the ignore_changes lists are exactly the fields the coordinator
             owns (README.md, "Ownership after creation"), and nothing else
             ignores a change
  templates  every templatefile() call names an existing template and passes
             exactly the variables the template uses
  rules      variables.tf planned on its own (no provider needed) with
             terraform.tfvars.example passes, and each bad input stops
             Terraform with the rule's message
  render     the user data and coordinator templates, rendered by Terraform
             with sample values, are valid cloud-config, TOML and JSON with
             the expected keys

Usage: check_infra.py CHECK [CHECK...]   (or "all"). Prints one line per check,
exits 1 on any failure.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import hcl2

INFRA = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(INFRA)
NODE_SECRETS = os.path.join(REPO, "puppet", "modules", "node_secrets", "files", "node-secrets")
CONSUL_ACL = os.path.join(REPO, "puppet", "modules", "consul_acl", "files", "rollgate-consul-acl")


class CheckFailed(Exception):
    """A check found problems; the message lists every one of them."""


def tf_files():
    return sorted(f for f in os.listdir(INFRA) if f.endswith(".tf"))


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def parse_all():
    parsed = {}
    for name in tf_files():
        with open(os.path.join(INFRA, name), encoding="utf-8") as handle:
            parsed[name] = hcl2.load(handle)
    return parsed


def strings_in(value):
    """Every string anywhere in a parsed HCL structure."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")


def check_parse():
    parsed = parse_all()
    return f"{len(parsed)} files parse as HCL2"


def check_variables():
    parsed = parse_all()
    problems = []
    declared = {}
    for name, doc in parsed.items():
        for block in doc.get("variable", []):
            for var_name, body in block.items():
                declared[var_name] = name
                if not str(body.get("description", "")).strip():
                    problems.append(f"{name}: variable {var_name} has no description")
                if "type" not in body:
                    problems.append(f"{name}: variable {var_name} has no type")
                for rule in body.get("validation", []):
                    if not str(rule.get("error_message", "")).strip():
                        problems.append(f"{name}: a validation of {var_name} has no error_message")
    used = set()
    for name, doc in parsed.items():
        for block_type, blocks in doc.items():
            for text in strings_in(blocks):
                for ref in VAR_REF.findall(text):
                    if ref not in declared:
                        problems.append(f"{name}: var.{ref} is used but not declared")
                    # A variable's own validation rules (or another
                    # variable's) do not count as a use.
                    if block_type != "variable":
                        used.add(ref)
    for var_name, name in sorted(declared.items()):
        if var_name not in used:
            problems.append(f"{name}: variable {var_name} is declared but never used")
    if problems:
        raise CheckFailed("; ".join(sorted(set(problems))))
    return f"{len(declared)} variables declared with type and description, all used, none undeclared"


BEGIN = "===== BEGIN coordinator allowed actions"
END = "===== END coordinator allowed actions"


def coordinator_actions():
    """The two action lists, parsed from the delimited block of iam.tf."""
    text = read(os.path.join(INFRA, "iam.tf"))
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise CheckFailed("iam.tf must hold exactly one BEGIN and one END coordinator allowed actions marker")
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    block = block.split("\n", 1)[1]  # drop the rest of the marker line
    doc = hcl2.loads(block)
    found = {}
    for local_block in doc.get("locals", []):
        found.update(local_block)
    return found


def check_iam():
    found = coordinator_actions()
    problems = []
    expected = {"coordinator_ec2_actions": "ec2:", "coordinator_autoscaling_actions": "autoscaling:"}
    for key, prefix in expected.items():
        actions = found.get(key)
        if not isinstance(actions, list) or not actions:
            problems.append(f"iam.tf: local {key} must be a non-empty list of string literals between the markers")
            continue
        for action in actions:
            if not isinstance(action, str) or not re.fullmatch(re.escape(prefix) + r"[A-Z][A-Za-z]+", action):
                problems.append(f"iam.tf: {key} holds {action!r}, not a plain '{prefix}Action' literal")
        if len(set(actions)) != len(actions):
            problems.append(f"iam.tf: {key} lists an action twice")
    extra = set(found) - set(expected)
    if extra:
        problems.append(f"iam.tf: only the two action lists belong between the markers, found also {sorted(extra)}")
    if problems:
        raise CheckFailed("; ".join(problems))
    counts = ", ".join(f"{len(found[k])} {k.split('_')[1]}" for k in expected)
    return f"coordinator action lists found ({counts})"


# Resource -> the fields the coordinator owns after creation. Every other
# resource must ignore nothing: an ignored field is a field nobody owns.
OWNED_BY_COORDINATOR = {
    ("aws_launch_template", "web"): {"image_id"},
    ("aws_autoscaling_group", "web"): {"launch_template", "desired_capacity", "suspended_processes"},
}


def ignore_lists():
    found = {}
    for name, doc in parse_all().items():
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for rname, body in named.items():
                    for lifecycle in body.get("lifecycle", []):
                        if "ignore_changes" in lifecycle:
                            raw = lifecycle["ignore_changes"]
                            items = raw if isinstance(raw, list) else [raw]
                            found[(rtype, rname)] = (name, {str(i).strip("${}") for i in items})
    return found


def check_ownership():
    found = ignore_lists()
    problems = []
    for key, wanted in OWNED_BY_COORDINATOR.items():
        if key not in found:
            problems.append(f"{key[0]}.{key[1]} ignores nothing; the coordinator owns {sorted(wanted)}")
        elif found[key][1] != wanted:
            problems.append(f"{found[key][0]}: {key[0]}.{key[1]} ignores {sorted(found[key][1])}, "
                            f"but the coordinator owns exactly {sorted(wanted)}")
    for key, (name, items) in found.items():
        if key not in OWNED_BY_COORDINATOR:
            problems.append(f"{name}: {key[0]}.{key[1]} ignores {sorted(items)}, which no one else changes")
    if problems:
        raise CheckFailed("; ".join(problems))
    return "; ".join(f"{t}.{n} leaves {sorted(v)} to the coordinator" for (t, n), v in OWNED_BY_COORDINATOR.items())


TEMPLATE_CALL = re.compile(r'templatefile\(\s*"\$\{path\.module\}/templates/([^"]+)"\s*,\s*local\.([A-Za-z0-9_]+)\s*\)')
INTERPOLATION = re.compile(r"\$\{~?(.*?)~?\}", re.S)
IDENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\b(\s*\()?")
KEYWORDS = {"for", "in", "if", "else", "endif", "endfor", "true", "false", "null"}


def template_variables(path):
    names = set()
    text = read(path)
    expressions = INTERPOLATION.findall(text) + re.findall(r"%\{~?(.*?)~?\}", text, re.S)
    for expression in expressions:
        expression = re.sub(r'"[^"]*"', "", expression)
        for ident, call in IDENT.findall(expression):
            if call or ident in KEYWORDS or ident.isdigit():
                continue
            names.add(ident)
    # Attribute accesses (a.b) only count their root.
    return {n for n in names if not any(re.search(r"\.\s*" + re.escape(n) + r"\b", e) for e in expressions)}


def all_locals():
    found = {}
    for doc in parse_all().values():
        for block in doc.get("locals", []):
            found.update(block)
    return found


def check_templates():
    locals_ = all_locals()
    problems = []
    calls = []
    for name in tf_files():
        calls += [(name, t, l) for t, l in TEMPLATE_CALL.findall(read(os.path.join(INFRA, name)))]
    uses = " ".join(read(os.path.join(INFRA, n)) for n in tf_files())
    if "templatefile(" in uses and len(re.findall(r"templatefile\(", uses)) != len(calls):
        problems.append("every templatefile() call must read ${path.module}/templates/NAME with a local.NAME_vars map")
    for name, template, local_name in calls:
        path = os.path.join(INFRA, "templates", template)
        if not os.path.isfile(path):
            problems.append(f"{name}: template templates/{template} does not exist")
            continue
        given = locals_.get(local_name)
        if not isinstance(given, dict):
            problems.append(f"{name}: local.{local_name} must be an object literal")
            continue
        wanted = template_variables(path)
        if wanted - set(given):
            problems.append(f"{name}: templates/{template} uses {sorted(wanted - set(given))} that local.{local_name} does not pass")
        if set(given) - wanted:
            problems.append(f"{name}: local.{local_name} passes {sorted(set(given) - wanted)} that templates/{template} never uses")
    for template in sorted(os.listdir(os.path.join(INFRA, "templates"))):
        if template.endswith(".tftpl") and template not in {t for _, t, _ in calls}:
            problems.append(f"templates/{template} is not used by any templatefile() call")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{len(calls)} templatefile() calls match their templates' variables"


# --- Checks that run Terraform (no provider needed) -------------------------


def terraform(workdir, *args):
    env = dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
    # A missing CLI configuration file only produces a warning; point at an
    # empty one so the output stays readable.
    cli_config = os.path.join(workdir, ".terraformrc")
    if not os.path.exists(cli_config):
        open(cli_config, "w").close()
    env["TF_CLI_CONFIG_FILE"] = cli_config
    return subprocess.run(["terraform", f"-chdir={workdir}", *args], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)


def flat(text):
    return " ".join(text.replace("│", " ").replace("╷", " ").replace("╵", " ").split())


# Each bad input and the message Terraform must stop with.
BAD_INPUTS = [
    ("missing required variable", {"omit": "environment"}, 'No value for required variable'),
    ("bad region", {"region": "europe-west"}, "The region must be an AWS region name such as eu-west-1"),
    ("bad instance type", {"web_instance_type": "x1e.32xlarge"}, "The web_instance_type must be an instance type of an allowed family"),
    ("malformed instance type", {"coordinator_instance_type": "t3-small"}, "The coordinator_instance_type must be an instance type of an allowed family"),
    ("bad VPC CIDR", {"vpc_cidr": "10.20.0.0/33"}, "The vpc_cidr must be a valid IPv4 CIDR block"),
    ("too few zones", {"az_count": 1}, "The az_count must be a whole number from 2 to 4"),
    ("capacity above max", {"web_desired_capacity": 9}, "The web_desired_capacity must be a whole number between web_min_size and web_max_size"),
    ("zero instances", {"web_min_size": 0, "web_desired_capacity": 0}, "The web_min_size must be a whole number of at least 1"),
    ("bad email", {"email_to": ["ops.example.com"]}, "The email_to must hold at least one email address"),
    ("bad duration", {"rollout_healthy_deadline": "five minutes"}, "The rollout_healthy_deadline must be a duration"),
    ("even server count", {"consul_server_count": 4}, "The consul_server_count must be 3 or 5"),
    ("bad alb CIDR", {"alb_ingress_cidrs": ["0.0.0.0/0", "nope"]}, "The alb_ingress_cidrs must hold at least one valid IPv4 CIDR block"),
]


def check_rules():
    example = hcl2.loads(read(os.path.join(INFRA, "terraform.tfvars.example")))
    problems = []
    with tempfile.TemporaryDirectory(prefix="rollgate-rules-") as work:
        with open(os.path.join(work, "variables.tf"), "w", encoding="utf-8") as handle:
            handle.write(read(os.path.join(INFRA, "variables.tf")))
        result = terraform(work, "init", "-backend=false", "-input=false", "-no-color")
        if result.returncode != 0:
            raise CheckFailed(f"terraform init of variables.tf alone failed: {flat(result.stderr)}")

        def plan(values, name):
            path = os.path.join(work, f"{name}.tfvars.json")
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(values, handle)
            return terraform(work, "plan", "-input=false", "-no-color", "-lock=false", f"-var-file={path}")

        good = plan(example, "good")
        if good.returncode != 0:
            problems.append(f"terraform.tfvars.example is rejected: {flat(good.stderr)}")
        for index, (label, change, message) in enumerate(BAD_INPUTS):
            values = dict(example)
            if "omit" in change:
                values.pop(change["omit"])
            else:
                values.update(change)
            result = plan(values, f"bad{index}")
            output = flat(result.stdout + " " + result.stderr)
            if result.returncode == 0:
                problems.append(f"{label}: Terraform accepted {change}")
            elif message not in output:
                problems.append(f"{label}: Terraform stopped, but without the message {message!r}: {output[:300]}")
            elif "omit" in change and change["omit"] not in output:
                problems.append(f"{label}: the message does not name the variable {change['omit']}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"example tfvars accepted; {len(BAD_INPUTS)} bad inputs stopped with their rule's message"


SAMPLE_PEM = "-----BEGIN CERTIFICATE-----\nMIIBsample\n-----END CERTIFICATE-----\n"
SAMPLE_SECRETS = {
    "region": "eu-west-1",
    "secrets": [
        {"secret_id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rollgate-prod/consul-web-token-AbCdEf",
         "path": "/etc/consul.d/acl-token.hcl", "owner": "root", "group": "consul", "mode": "0640",
         "format": "consul-agent-token"},
        {"secret_id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rollgate-prod/slack-token-AbCdEf",
         "path": "/etc/rollgate/slack-token", "owner": "root", "group": "rollgate", "mode": "0640",
         "format": "raw"},
    ],
}

# Sample values for each template, keyed like the locals that feed them.
SAMPLES = {
    "coordinator_config_vars": {
        "consul_token_file": "/etc/rollgate/consul-token",
        "service_name": "web",
        "auto_scaling_group": "rollgate-prod-web",
        "launch_template": "rollgate-prod-web",
        "artifact": "acmeinc/web",
        "approval": "manual",
        "batch_size": 1,
        "min_healthy_time": "10s",
        "healthy_deadline": "5m",
        "progress_deadline": "10m",
        "slack_token_file": "/etc/rollgate/slack-token",
        "slack_channel": "#ops",
        "smtp_host": "smtp.example.com",
        "smtp_port": 587,
        "smtp_username": "rollgate \"ops\"",
        "smtp_password_file": "/etc/rollgate/smtp-password",
        "email_from": "rollgate@example.com",
        "email_to": ["ops@example.com", "oncall@example.com"],
    },
    "web_user_data_vars": {
        "consul_ca_pem": SAMPLE_PEM,
        "consul_ca_path": "/etc/consul.d/tls/ca.pem",
        "node_secrets_json": json.dumps(SAMPLE_SECRETS),
    },
    "consul_server_user_data_vars": {
        "consul_ca_pem": SAMPLE_PEM,
        "consul_ca_path": "/etc/consul.d/tls/ca.pem",
        "consul_server_cert_pem": SAMPLE_PEM,
        "web_disabled_marker": "/etc/rollgate/web-disabled",
        "bootstrap_expect": 3,
        "consul_acl_json": json.dumps({"policies": {"agent": 'service "web" {\n  policy = "write"\n}\n'}}),
        "node_secrets_json": json.dumps(SAMPLE_SECRETS),
    },
    "coordinator_user_data_vars": {
        "consul_ca_pem": SAMPLE_PEM,
        "consul_ca_path": "/etc/consul.d/tls/ca.pem",
        "web_disabled_marker": "/etc/rollgate/web-disabled",
        "coordinator_toml": None,  # rendered from coordinator_config_vars first
        "coordinator_unit": None,  # read from templates/rollgate-coordinator.service
        "node_secrets_json": json.dumps(SAMPLE_SECRETS),
    },
}

HARNESS = """
locals {
  s                = jsondecode(file("${path.module}/samples.json"))
  templates        = "%(templates)s"
  coordinator_toml = templatefile("${local.templates}/coordinator.toml.tftpl", local.s.coordinator_config_vars)
}

output "coordinator_toml" {
  value = local.coordinator_toml
}

output "web_user_data" {
  value = templatefile("${local.templates}/web-user-data.yaml.tftpl", local.s.web_user_data_vars)
}

output "consul_server_user_data" {
  value = templatefile("${local.templates}/consul-server-user-data.yaml.tftpl", local.s.consul_server_user_data_vars)
}

output "coordinator_user_data" {
  value = templatefile("${local.templates}/coordinator-user-data.yaml.tftpl", merge(local.s.coordinator_user_data_vars, {
    coordinator_toml = local.coordinator_toml
    coordinator_unit = file("${local.templates}/rollgate-coordinator.service")
  }))
}
"""

EXPECTED_COORDINATOR_KEYS = {
    "consul": {"address", "token_file", "timeout"},
    "log": {"format", "level"},
    "coordinator": {"registry_poll"},
    "notify": {"default_receivers", "receivers"},
}


def render_templates():
    locals_ = all_locals()
    for key, sample in SAMPLES.items():
        if set(sample) != set(locals_.get(key, {})):
            raise CheckFailed(f"the render samples for local.{key} have keys {sorted(sample)}, "
                              f"infra passes {sorted(locals_.get(key, {}))}: update SAMPLES in {__file__}")
    with tempfile.TemporaryDirectory(prefix="rollgate-render-") as work:
        samples = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in SAMPLES.items()}
        with open(os.path.join(work, "samples.json"), "w", encoding="utf-8") as handle:
            json.dump(samples, handle)
        with open(os.path.join(work, "main.tf"), "w", encoding="utf-8") as handle:
            handle.write(HARNESS % {"templates": os.path.join(INFRA, "templates")})
        for args in (["init", "-backend=false", "-input=false", "-no-color"],
                     ["apply", "-auto-approve", "-input=false", "-no-color", "-lock=false"]):
            result = terraform(work, *args)
            if result.returncode != 0:
                raise CheckFailed(f"terraform {args[0]} of the render harness failed: {flat(result.stderr)}")
        result = terraform(work, "output", "-json")
        if result.returncode != 0:
            raise CheckFailed(f"terraform output failed: {flat(result.stderr)}")
        return {k: v["value"] for k, v in json.loads(result.stdout).items()}


def check_coordinator_toml(text, problems):
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problems.append(f"coordinator.toml.tftpl renders invalid TOML: {err}")
        return
    for table, keys in EXPECTED_COORDINATOR_KEYS.items():
        if set(config.get(table, {})) != keys:
            problems.append(f"coordinator TOML [{table}] has {sorted(config.get(table, {}))}, expected {sorted(keys)}")
    services = config.get("services", [])
    if len(services) != 1 or set(services[0]) != {"name", "auto_scaling_group", "launch_template", "artifact", "approval", "rollout"}:
        problems.append(f"coordinator TOML [[services]] is not as expected: {services}")
    elif set(services[0]["rollout"]) != {"batch_size", "min_healthy_time", "healthy_deadline", "progress_deadline"}:
        problems.append(f"coordinator TOML [services.rollout] has {sorted(services[0]['rollout'])}")
    # The schema of rollgate's [notify] section (agent/src/notify/config.rs);
    # agent/tests/config.rs also loads this template through rollgate itself.
    receivers = {r.get("name"): r for r in config.get("notify", {}).get("receivers", [])}
    if set(receivers) != {"ops-slack", "ops-email"}:
        problems.append(f"coordinator TOML [[notify.receivers]] are {sorted(receivers)}, expected ops-slack and ops-email")
    slack = receivers.get("ops-slack", {}).get("slack", {})
    if set(slack) != {"channel", "token_file"}:
        problems.append(f"coordinator TOML [notify.receivers.slack] has {sorted(slack)}")
    email = receivers.get("ops-email", {}).get("email", {})
    if email.get("username") != 'rollgate "ops"' or email.get("to") != ["ops@example.com", "oncall@example.com"]:
        problems.append("coordinator TOML does not round-trip quoted strings and lists")
    if email.get("tls") != "starttls" or email.get("port") != 587:
        problems.append("coordinator TOML [notify.receivers.email] tls/port are wrong")


def check_cloud_config(name, text, problems):
    import yaml  # PyYAML, installed by .ci/iac-check

    if not text.startswith("#cloud-config\n"):
        problems.append(f"{name}: user data must start with #cloud-config")
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problems.append(f"{name}: invalid YAML: {err}")
        return {}
    files = {}
    for entry in doc.get("write_files", []):
        files[entry["path"]] = entry.get("content", "")
        if not re.fullmatch(r"0[0-7]{3}", str(entry.get("permissions", ""))):
            problems.append(f"{name}: {entry['path']} has no octal permissions")
    secrets_list = files.get("/etc/node-secrets.json")
    if secrets_list is None:
        problems.append(f"{name}: writes no /etc/node-secrets.json")
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            handle.write(secrets_list)
        try:
            result = subprocess.run([sys.executable, NODE_SECRETS, "--check", handle.name],
                                    capture_output=True, text=True, check=False)
        finally:
            os.unlink(handle.name)
        if result.returncode != 0:
            problems.append(f"{name}: node-secrets rejects its secret list: {result.stderr.strip()}")
    if "-----BEGIN CERTIFICATE-----" not in files.get("/etc/consul.d/tls/ca.pem", ""):
        problems.append(f"{name}: the Consul CA certificate is not written to /etc/consul.d/tls/ca.pem")
    return files


def sample_acl_config():
    """A configuration of the shape local.consul_acl_config has, with the
    policy fixtures of tests/ and placeholder ARNs; check_acl_config keeps
    its keys in step with the local."""
    return json.dumps({
        "region": "eu-west-1", "datacenter": "dc1", "consul_address": "http://127.0.0.1:8500",
        "management_token_file": "/etc/rollgate/consul-acl/management-token", "policy_prefix": "rollgate-",
        "policies": {os.path.splitext(f)[0]: read(os.path.join(INFRA, "tests", "fixtures", "acl", f))
                     for f in sorted(os.listdir(os.path.join(INFRA, "tests", "fixtures", "acl"))) if f.endswith(".hcl")},
        "role_tokens": [{"role": "coordinator", "description": "rollgate coordinator",
                         "secret_id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"}],
        "node_tokens": {"secret_prefix": "rollgate-prod/node-token/", "tags": {},
                        "groups": [{"auto_scaling_group": "rollgate-prod-web", "reader_role_id": "AROAX",
                                    "service_identities": ["web"], "roles": ["agent"]}]},
    })


def check_acl_config(config):
    """The keys infra/consul-acl.tf writes are the keys rollgate-consul-acl reads."""
    problems = []
    written = set(all_locals().get("consul_acl_config", {}))
    if written != set(config):
        problems.append(f"infra/consul-acl.tf local.consul_acl_config has keys {sorted(written)}, "
                        f"rollgate-consul-acl is tested with {sorted(config)}")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    try:
        result = subprocess.run([sys.executable, CONSUL_ACL, "--check", handle.name],
                                capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        problems.append(f"rollgate-consul-acl rejects the configuration shape: {result.stderr.strip()}")
    return problems


def check_render():
    rendered = render_templates()
    problems = []
    check_coordinator_toml(rendered["coordinator_toml"], problems)
    for name in ("web_user_data", "consul_server_user_data", "coordinator_user_data"):
        files = check_cloud_config(name, rendered[name], problems)
        if name != "web_user_data" and "/etc/rollgate/web-disabled" not in files:
            problems.append(f"{name}: does not write the web-disabled marker")
        if name == "coordinator_user_data":
            if files.get("/etc/rollgate/rollgate.toml", "").strip() != rendered["coordinator_toml"].strip():
                problems.append("coordinator user data does not carry the rendered coordinator TOML unchanged")
            if "ExecStart=/usr/local/bin/rollgate --config /etc/rollgate/rollgate.toml coordinator" not in \
                    files.get("/etc/systemd/system/rollgate-coordinator.service", ""):
                problems.append("coordinator user data does not install rollgate-coordinator.service")
        if name == "consul_server_user_data":
            if "server           = true" not in files.get("/etc/consul.d/server.hcl", ""):
                problems.append("Consul server user data does not write server.hcl")
            try:
                acl = json.loads(files.get("/etc/rollgate/consul-acl/config.json", ""))
                if "agent" not in acl.get("policies", {}):
                    problems.append("Consul server user data: the ACL bootstrap configuration lost its policies")
            except ValueError as err:
                problems.append(f"Consul server user data: /etc/rollgate/consul-acl/config.json is not JSON: {err}")
            problems.extend(check_acl_config(json.loads(sample_acl_config())))
    if problems:
        raise CheckFailed("; ".join(problems))
    return "user data (3) and coordinator TOML render to valid cloud-config, TOML and JSON"


CHECKS = {
    "parse": check_parse,
    "variables": check_variables,
    "iam": check_iam,
    "ownership": check_ownership,
    "templates": check_templates,
    "rules": check_rules,
    "render": check_render,
}


def main(argv):
    names = list(CHECKS) if argv in ([], ["all"]) else argv
    failed = 0
    for name in names:
        if name not in CHECKS:
            print(f"FAIL  infra {name}: no such check (known: {', '.join(CHECKS)})")
            failed += 1
            continue
        try:
            detail = CHECKS[name]()
            print(f"ok    infra {name}: {detail}")
        except (CheckFailed, OSError, ValueError) as err:
            print(f"FAIL  infra {name}: {err}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
