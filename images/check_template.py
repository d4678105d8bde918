#!/usr/bin/env python3
"""Offline checks of the Packer template (run by .ci/iac-check).

Packer and its plugins are not installed on CI machines; this parses the
template with python-hcl2 and checks what `packer validate` would not catch
anyway without an AWS account:

  * every variable has a type and a description; every var.X / local.X used
    is declared; every variable is used;
  * every file the build reads from this repository exists: the `source` of
    file provisioners, the `script`/`scripts` of shell provisioners, and the
    Puppet tree with manifests/site.pp and the role it applies;
  * sources that come from variables (release binaries, the Consul archive)
    are build inputs: reported, not required to exist;
  * the upload paths agree with the paths the provisioning scripts and the
    Puppet role read;
  * the base image is Canonical's Ubuntu 24.04, the AMI carries the
    rollgate:artifact and rollgate:version tags, and the manifest
    post-processor records version and artifact.

Prints one line per check; exits 1 on any failure.
"""

import os
import re
import subprocess
import sys

import hcl2

IMAGES = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(IMAGES)
CANONICAL = "099720109477"

VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)")
LOCAL_REF = re.compile(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)")


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def load_templates():
    docs = {}
    for name in sorted(os.listdir(IMAGES)):
        if name.endswith(".pkr.hcl"):
            with open(os.path.join(IMAGES, name), encoding="utf-8") as handle:
                docs[name] = hcl2.load(handle)
    if not docs:
        raise SystemExit("no *.pkr.hcl template in images/")
    return docs


def merged(docs, key):
    out = {}
    for doc in docs.values():
        for block in doc.get(key, []):
            out.update(block)
    return out


def resolve(expr, locals_):
    """Substitute local.X (recursively) and path.root in a path expression.

    Returns (path or None, inputs): path is None when the value depends on a
    variable (a build input), inputs names those variables.
    """
    seen = 0
    while True:
        match = re.search(r"\$\{local\.([A-Za-z_][A-Za-z0-9_]*)\}", expr)
        if not match or seen > 10:
            break
        expr = expr.replace(match.group(0), str(locals_.get(match.group(1), "")))
        seen += 1
    inputs = sorted(set(VAR_REF.findall(expr)))
    if inputs:
        return None, inputs
    return expr.replace("${path.root}", IMAGES), []


def main():
    docs = load_templates()
    problems = []
    lines = []

    variables = merged(docs, "variable")
    locals_ = merged(docs, "locals")
    for name, body in variables.items():
        if not str(body.get("description", "")).strip():
            problems.append(f"variable {name} has no description")
        if "type" not in body:
            problems.append(f"variable {name} has no type")
    used = set()
    for doc in docs.values():
        for block_type, blocks in doc.items():
            for text in strings_in(blocks):
                for ref in VAR_REF.findall(text):
                    if ref not in variables:
                        problems.append(f"var.{ref} is used but not declared")
                    if block_type != "variable":
                        used.add(ref)
                for ref in LOCAL_REF.findall(text):
                    if ref not in locals_:
                        problems.append(f"local.{ref} is used but not declared")
    for name in sorted(set(variables) - used):
        problems.append(f"variable {name} is declared but never used")
    lines.append(f"{len(variables)} variables with type and description, {len(locals_)} locals, references resolved")

    builds = [b for doc in docs.values() for b in doc.get("build", [])]
    checked, inputs, uploads, destinations = [], [], {}, []
    for build in builds:
        for provisioner in build.get("provisioner", []):
            for kind, body in provisioner.items():
                paths = []
                if kind == "file":
                    paths.append(body.get("source", ""))
                    destinations.append(body.get("destination", ""))
                elif kind == "shell":
                    paths += [body["script"]] if "script" in body else []
                    paths += body.get("scripts", [])
                for raw in paths:
                    path, needs = resolve(raw, locals_)
                    if path is None:
                        inputs.append(f"{raw} ({', '.join('var.' + n for n in needs)})")
                        continue
                    if not os.path.exists(path):
                        problems.append(f"{kind} provisioner reads {raw}, which does not exist ({os.path.normpath(path)})")
                        continue
                    checked.append(os.path.relpath(os.path.normpath(path), REPO))
                    if kind == "shell":
                        syntax = subprocess.run(["bash", "-n", path], capture_output=True, text=True, check=False)
                        if syntax.returncode != 0:
                            problems.append(f"{raw}: bash syntax error: {syntax.stderr.strip()}")
                    if kind == "file":
                        uploads[os.path.normpath(path)] = body.get("destination", "")
    lines.append(f"{len(checked)} repository files read by the build exist: {', '.join(checked)}")
    lines.append(f"{len(inputs)} build inputs supplied at build time (not checked): {', '.join(inputs)}")

    # The Puppet tree: uploaded where apply-puppet.sh looks, holding what it applies.
    puppet_dir = os.path.join(REPO, "puppet")
    destination = uploads.get(puppet_dir)
    if destination is None:
        problems.append("no file provisioner uploads the puppet/ tree")
    else:
        with open(os.path.join(IMAGES, "scripts", "apply-puppet.sh"), encoding="utf-8") as handle:
            apply_script = handle.read()
        tree = re.search(r"^tree=(\S+)$", apply_script, re.M)
        if not tree or tree.group(1) != destination:
            problems.append(f"apply-puppet.sh reads the Puppet tree from {tree.group(1) if tree else '?'}, "
                            f"but it is uploaded to {destination}")
        for needed in ("manifests/site.pp", "modules/role/manifests/web.pp"):
            if not os.path.isfile(os.path.join(puppet_dir, needed)):
                problems.append(f"the uploaded Puppet tree lacks {needed}")
        build_dir = re.search(r"FACTER_rollgate_build_dir=(\S+)", apply_script)
        for binary in ("rollgate", "web"):
            expected = f"{build_dir.group(1) if build_dir else '?'}/{binary}"
            if expected not in destinations:
                problems.append(f"role::web reads {expected}, but no file provisioner uploads it there")
        lines.append(f"puppet/ uploaded to {destination}, where apply-puppet.sh applies manifests/site.pp")

    sources = merged(docs, "source").get("amazon-ebs", {})
    for name, body in sources.items():
        ami_filter = (body.get("source_ami_filter") or [{}])[0]
        if CANONICAL not in ami_filter.get("owners", []) or ami_filter.get("most_recent") is not True:
            problems.append(f"source {name}: source_ami_filter must take the most recent image owned by Canonical ({CANONICAL})")
        if "ubuntu-noble-24.04" not in ami_filter.get("filters", {}).get("name", ""):
            problems.append(f"source {name}: the base image filter must select Ubuntu 24.04 (noble)")
        tags = body.get("tags")
        if isinstance(tags, str):
            tags = locals_.get(LOCAL_REF.search(tags).group(1), {}) if LOCAL_REF.search(tags) else {}
        for tag in ("rollgate:artifact", "rollgate:version"):
            if tag not in (tags or {}):
                problems.append(f"source {name}: the AMI is not tagged {tag}")
    manifests = [pp["manifest"] for b in builds for pp in b.get("post-processor", []) if "manifest" in pp]
    if not manifests:
        problems.append("no manifest post-processor")
    for manifest in manifests:
        if manifest.get("output") != "packer-manifest.json":
            problems.append("the manifest post-processor must write packer-manifest.json")
        custom = manifest.get("custom_data", {})
        if custom.get("version") != "${var.version}" or custom.get("artifact") != "${var.artifact}":
            problems.append("the manifest's custom_data must carry version = var.version and artifact = var.artifact")
    lines.append(f"{len(sources)} source(s) from Canonical's Ubuntu 24.04, tagged; manifest post-processor records version and artifact")

    if problems:
        for problem in problems:
            print(f"FAIL  packer: {problem}")
        return 1
    for line in lines:
        print(f"ok    packer: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
