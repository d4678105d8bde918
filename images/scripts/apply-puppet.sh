#!/bin/bash
# Applies role::web from the uploaded Puppet tree, masterless, then applies it
# a second time: the second run must change nothing, which proves the
# manifests are idempotent on the real target system.
set -euo pipefail

: "${ROLLGATE_VERSION:?ROLLGATE_VERSION must be set by the Packer template}"
: "${ROLLGATE_ARTIFACT:?ROLLGATE_ARTIFACT must be set by the Packer template}"

tree=/tmp/build/puppet

# Facts are how per-build values reach role::web (see its documentation).
export FACTER_rollgate_version="$ROLLGATE_VERSION"
export FACTER_rollgate_artifact="$ROLLGATE_ARTIFACT"
export FACTER_rollgate_build_dir=/tmp/build
export FACTER_consul_datacenter="${CONSUL_DATACENTER:-dc1}"
export FACTER_consul_join_tag_key="${CONSUL_JOIN_TAG_KEY:-consul-cluster}"
export FACTER_consul_join_tag_value="${CONSUL_JOIN_TAG_VALUE:-rollgate}"

apply() {
  puppet apply --detailed-exitcodes --strict=error \
    --modulepath "$tree/modules" "$tree/manifests/site.pp"
}

# --detailed-exitcodes: 0 no change, 2 changes, 4/6 failures.
status=0
apply || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
  echo "puppet apply of role::web failed (exit $status)" >&2
  exit 1
fi

status=0
apply || status=$?
if [ "$status" -ne 0 ]; then
  echo "the second puppet apply was not a no-op (exit $status): the manifests are not idempotent" >&2
  exit 1
fi
echo "role::web applied; second run changed nothing"
