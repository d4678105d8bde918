#!/bin/bash
# Base packages for the build: Puppet (from Ubuntu's own archive) and unzip.
# Runs as root on the build instance.
set -euo pipefail

: "${PUPPET_PACKAGE:?PUPPET_PACKAGE must be set by the Packer template}"

# cloud-init runs apt on first boot; wait for it so the two do not race for
# the dpkg lock. Exit status 2 means "done, with recoverable errors".
status=0
cloud-init status --wait >/dev/null || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
  echo "cloud-init failed on the build instance (status $status)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# Bake the current security updates into the image.
apt-get -y -o Dpkg::Options::=--force-confold upgrade
apt-get install -y --no-install-recommends "$PUPPET_PACKAGE" unzip ca-certificates

# Upload target of the file provisioners, which run as the SSH user.
install -d -m 0755 -o ubuntu -g ubuntu /tmp/build /tmp/build/puppet
