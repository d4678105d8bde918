# @summary Boot-time fetch of the node's secrets from AWS Secrets Manager.
#
# Installs `node-secrets` (Python, boto3) and a oneshot unit that runs it
# before Consul and rollgate start. The unit only runs when the instance's
# user data wrote the list of secrets (`list_file`), so an image booted
# without one (a test, a dev box) simply has no secrets.
#
# @param list_file
#   JSON list of secrets to fetch, written by the instance's user data.
# @param program
#   Where the helper program is installed.
# @param boto3_package
#   OS package providing boto3 for the system Python.
# @param refresh_interval
#   How often the secrets are fetched again after boot, so a rotated value
#   reaches the node (files change only when a value did; Consul restarts
#   then, see consul_agent's consul-secrets.path).
class node_secrets (
  Pattern[/\A\//]    $list_file        = '/etc/node-secrets.json',
  Pattern[/\A\//]    $program          = '/usr/local/sbin/node-secrets',
  String[1]          $boto3_package    = 'python3-boto3',
  Rollgate::Duration $refresh_interval = '1h',
) {
  package { $boto3_package:
    ensure => installed,
  }

  file { $program:
    ensure => file,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
    source => 'puppet:///modules/node_secrets/node-secrets',
  }

  file { '/etc/systemd/system/node-secrets.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('node_secrets/node-secrets.service.epp', {
        'program'   => $program,
        'list_file' => $list_file,
    }),
  }

  service { 'node-secrets':
    enable  => true,
    require => [Package[$boto3_package], File[$program], File['/etc/systemd/system/node-secrets.service']],
  }

  file { '/etc/systemd/system/node-secrets-refresh.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('node_secrets/node-secrets-refresh.service.epp', {
        'program'   => $program,
        'list_file' => $list_file,
    }),
  }

  file { '/etc/systemd/system/node-secrets-refresh.timer':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('node_secrets/node-secrets-refresh.timer.epp', {
        'list_file' => $list_file,
        'interval'  => $refresh_interval,
    }),
  }

  service { 'node-secrets-refresh.timer':
    enable  => true,
    require => [
      File['/etc/systemd/system/node-secrets-refresh.service'],
      File['/etc/systemd/system/node-secrets-refresh.timer'],
    ],
  }
}
