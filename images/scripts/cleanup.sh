#!/bin/bash
# Leaves nothing in the image that belongs to the build or must be unique per
# instance: every instance launched from the AMI must look freshly installed.
set -euo pipefail

: "${PUPPET_PACKAGE:?PUPPET_PACKAGE must be set by the Packer template}"
export DEBIAN_FRONTEND=noninteractive

# Puppet only configured the image; instances never run it.
apt-get purge -y "$PUPPET_PACKAGE"
apt-get autoremove -y --purge
apt-get clean
rm -rf /var/lib/apt/lists/*

# The build inputs (binaries, Puppet tree, Consul archive) and Puppet's state.
rm -rf /tmp/build /var/lib/puppet /var/cache/puppet /etc/puppet

# Consul must start with an empty data dir, or every instance would share
# one node id.
find /opt/consul -mindepth 1 -delete

# Per-instance identity, regenerated at first boot: machine-id (systemd),
# SSH host keys (cloud-init), cloud-init's own state and logs.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs --seed

# The build's temporary SSH key and shell histories.
rm -f /home/ubuntu/.ssh/authorized_keys /root/.bash_history /home/ubuntu/.bash_history
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
sync
