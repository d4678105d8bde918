#!/usr/bin/env python3
"""Checks two conventions of puppet/ that puppet-lint does not (run by .ci/iac-check).

  * every class and defined type parameter, and every EPP template
    parameter, has a data type;
  * every exec resource is guarded (creates, unless, onlyif or refreshonly),
    so applying the manifests twice changes nothing the second time.

Usage: check_conventions.py PUPPET_DIR
"""

import os
import re
import sys

GUARDS = ("creates", "unless", "onlyif", "refreshonly")


def strip_comments(text):
    return "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("#") else "" for line in text.splitlines())


def param_block(text, start):
    """The text between the '(' at start and its matching ')'."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:index]
    return ""


def split_params(block):
    params, depth, current = [], 0, ""
    for char in block:
        if char in "[({":
            depth += 1
        elif char in "])}":
            depth -= 1
        if char == "," and depth == 0:
            params.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        params.append(current)
    return [p.strip() for p in params if p.strip()]


def check_params(path, params, problems, what):
    for param in params:
        match = re.match(r"^(?P<type>[A-Z][\w:]*(\[.*\])?)?\s*\$(?P<name>\w+)", param, re.S)
        if not match:
            problems.append(f"{path}: cannot read the parameter {param!r} of {what}")
        elif not match.group("type"):
            problems.append(f"{path}: parameter ${match.group('name')} of {what} has no data type")


def check_manifest(path, problems):
    with open(path, encoding="utf-8") as handle:
        text = strip_comments(handle.read())
    for match in re.finditer(r"\b(class|define)\s+([\w:]+)\s*\(", text):
        check_params(path, split_params(param_block(text, match.end() - 1)), problems, f"{match.group(1)} {match.group(2)}")
    for match in re.finditer(r"\bexec\s*\{", text):
        depth, body = 0, ""
        for char in text[match.end() - 1:]:
            depth += char == "{"
            depth -= char == "}"
            body += char
            if depth == 0:
                break
        if not any(re.search(r"\b" + guard + r"\s*=>", body) for guard in GUARDS):
            title = body.split(":", 1)[0].strip("{ \n")
            problems.append(f"{path}: exec {title} has none of {', '.join(GUARDS)}")


def check_template(path, problems):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    header = re.match(r"\s*<%-?\s*\|(.*?)\|\s*-?%>", text, re.S)
    if header:
        check_params(path, split_params(header.group(1)), problems, "the template")


def main(root):
    problems, manifests, templates = [], 0, 0
    for directory, _, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(directory, name)
            if name.endswith(".pp"):
                manifests += 1
                check_manifest(path, problems)
            elif name.endswith(".epp"):
                templates += 1
                check_template(path, problems)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"{manifests} manifests, {templates} templates: every parameter typed, every exec guarded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
