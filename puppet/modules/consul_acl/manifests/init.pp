# @summary Consul ACL bootstrap, for the nodes that run as Consul servers.
#
# Installs `rollgate-consul-acl` and a timer that runs it at boot and then
# every `interval`: with the initial management token it creates the role
# policies from config/acl, the coordinator's token and one token per web
# and coordinator instance (see the program's documentation and
# infra/consul-acl.tf). Every node boots from the same image, so this is on
# every node, but the units only start where the user data wrote
# `config_file`: on the Consul servers.
#
# @param program
#   Where the program is installed.
# @param config_file
#   Its configuration, written by the Consul servers' user data.
# @param interval
#   Time between two runs; new instances wait for their token about this long.
class consul_acl (
  Pattern[/\A\//]    $program     = '/usr/local/sbin/rollgate-consul-acl',
  Pattern[/\A\//]    $config_file = '/etc/rollgate/consul-acl/config.json',
  Rollgate::Duration $interval    = '1m',
) {
  # boto3 comes with class node_secrets, which every role that includes
  # this class also includes.

  file { $program:
    ensure => file,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
    source => 'puppet:///modules/consul_acl/rollgate-consul-acl',
  }

  file { '/etc/systemd/system/rollgate-consul-acl.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('consul_acl/rollgate-consul-acl.service.epp', {
        'program'     => $program,
        'config_file' => $config_file,
    }),
  }

  file { '/etc/systemd/system/rollgate-consul-acl.timer':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('consul_acl/rollgate-consul-acl.timer.epp', {
        'config_file' => $config_file,
        'interval'    => $interval,
    }),
  }

  service { 'rollgate-consul-acl.timer':
    enable  => true,
    require => [
      File[$program],
      File['/etc/systemd/system/rollgate-consul-acl.service'],
      File['/etc/systemd/system/rollgate-consul-acl.timer'],
    ],
  }
}
