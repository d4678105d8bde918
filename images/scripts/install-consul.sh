#!/bin/bash
# Installs the Consul binary from the release archive uploaded by Packer,
# after checking it against the SHA-256 given to the build.
set -euo pipefail

: "${CONSUL_VERSION:?CONSUL_VERSION must be set by the Packer template}"
: "${CONSUL_SHA256:?CONSUL_SHA256 must be set by the Packer template}"

archive=/tmp/build/consul.zip
echo "${CONSUL_SHA256}  ${archive}" | sha256sum --check --strict -

unpacked=$(mktemp -d)
unzip -q "$archive" consul -d "$unpacked"
install -m 0755 -o root -g root "$unpacked/consul" /usr/local/bin/consul
rm -rf "$unpacked"

reported=$(/usr/local/bin/consul version | head -n 1)
case "$reported" in
  "Consul v${CONSUL_VERSION}" | "Consul v${CONSUL_VERSION}+"*) ;;
  *)
    echo "expected Consul ${CONSUL_VERSION}, the archive holds: ${reported}" >&2
    exit 1
    ;;
esac
echo "Installed ${reported}"
