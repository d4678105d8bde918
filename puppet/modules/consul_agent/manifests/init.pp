# @summary Consul client agent: user, data dir, configuration and systemd unit.
#
# The consul binary itself is installed by the Packer build (from a release
# archive whose checksum it verifies); this class configures it. The agent
# finds the servers with cloud auto-join (EC2 tags), talks TLS to them with
# the cluster CA and gets its own certificate through auto_encrypt.
#
# Secrets are not baked: at boot `node-secrets.service` (class node_secrets)
# writes the ACL token and gossip key as configuration fragments into
# `config_dir`, which the agent loads with the rest of the directory.
#
# @param datacenter
#   Consul datacenter; must match the servers.
# @param join_tag_key
#   EC2 tag key that marks the Consul servers (cloud auto-join).
# @param join_tag_value
#   Value of that tag.
# @param binary_path
#   Where the Packer build installed the consul binary.
# @param user
#   System user the agent runs as.
# @param config_dir
#   Configuration directory (-config-dir); every .hcl file in it is loaded.
# @param data_dir
#   Data directory; empty in the image, so every instance gets a new node id.
# @param ca_file
#   CA certificate that signed the servers' certificates, written at boot
#   from the instance's user data (it is public, not a secret).
# @param token_fragment
#   Fragment written at boot holding `acl.tokens.agent`; listed here only so
#   it is documented and its directory permissions fit. Never in the image.
# @param acl_default_policy
#   ACL default policy; `deny` in production.
# @param log_level
#   Agent log level.
# @param client_addr
#   Address of the HTTP API; loopback, used by the rollgate agent.
# @param http_port
#   Port of the HTTP API.
# @param secret_files
#   Files node-secrets writes into `config_dir` on some kind of node (agent
#   token, gossip key; on servers the management token and TLS key). Consul
#   is restarted when one of them changes (consul-secrets.path), so a
#   rotated secret, or one that arrived late, takes effect.
class consul_agent (
  String[1]                                       $datacenter,
  String[1]                                       $join_tag_key,
  String[1]                                       $join_tag_value,
  Pattern[/\A\//]                                 $binary_path        = '/usr/local/bin/consul',
  Pattern[/\A[a-z_][a-z0-9_-]*\z/]                $user               = 'consul',
  Pattern[/\A\//]                                 $config_dir         = '/etc/consul.d',
  Pattern[/\A\//]                                 $data_dir           = '/opt/consul',
  Pattern[/\A\//]                                 $ca_file            = '/etc/consul.d/tls/ca.pem',
  Pattern[/\A\//]                                 $token_fragment     = '/etc/consul.d/acl-token.hcl',
  Enum['allow', 'deny']                           $acl_default_policy = 'deny',
  Enum['trace', 'debug', 'info', 'warn', 'error'] $log_level          = 'info',
  String[1]                                       $client_addr        = '127.0.0.1',
  Integer[1, 65535]                               $http_port          = 8500,
  Array[Pattern[/\A\//], 1]                        $secret_files       = [
    '/etc/consul.d/acl-token.hcl',
    '/etc/consul.d/gossip.hcl',
    '/etc/consul.d/acl-management.hcl',
    '/etc/consul.d/tls/server-key.pem',
  ],
) {
  group { $user:
    ensure => present,
    system => true,
  }

  user { $user:
    ensure     => present,
    system     => true,
    gid        => $user,
    home       => $data_dir,
    managehome => false,
    shell      => '/usr/sbin/nologin',
    comment    => 'Consul agent',
    require    => Group[$user],
  }

  # The directories are world-traversable so the rollgate agent can read the
  # (public) CA certificate; every file holding configuration or secrets is
  # 0640 root:consul.
  file { $config_dir:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  file { "${config_dir}/tls":
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  file { $data_dir:
    ensure  => directory,
    owner   => $user,
    group   => $user,
    mode    => '0750',
    require => User[$user],
  }

  file { "${config_dir}/consul.hcl":
    ensure  => file,
    owner   => 'root',
    group   => $user,
    mode    => '0640',
    content => epp('consul_agent/consul.hcl.epp', {
        'datacenter'         => $datacenter,
        'data_dir'           => $data_dir,
        'join_tag_key'       => $join_tag_key,
        'join_tag_value'     => $join_tag_value,
        'ca_file'            => $ca_file,
        'token_fragment'     => $token_fragment,
        'acl_default_policy' => $acl_default_policy,
        'log_level'          => $log_level,
        'client_addr'        => $client_addr,
        'http_port'          => $http_port,
    }),
  }

  # Client-only settings live in their own file: a Consul server booting
  # from this image deletes it and writes its server configuration instead.
  file { "${config_dir}/client.hcl":
    ensure  => file,
    owner   => 'root',
    group   => $user,
    mode    => '0640',
    content => epp('consul_agent/client.hcl.epp'),
  }

  file { '/etc/systemd/system/consul.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('consul_agent/consul.service.epp', {
        'binary_path' => $binary_path,
        'user'        => $user,
        'config_dir'  => $config_dir,
        'data_dir'    => $data_dir,
    }),
  }

  file { '/etc/systemd/system/consul-secrets.path':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('consul_agent/consul-secrets.path.epp', { 'secret_files' => $secret_files }),
  }

  file { '/etc/systemd/system/consul-secrets.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('consul_agent/consul-secrets.service.epp'),
  }

  service { 'consul-secrets.path':
    enable  => true,
    require => [File['/etc/systemd/system/consul-secrets.path'], File['/etc/systemd/system/consul-secrets.service']],
  }

  service { 'consul':
    enable    => true,
    require   => User[$user],
    subscribe => [
      File["${config_dir}/consul.hcl"],
      File["${config_dir}/client.hcl"],
      File['/etc/systemd/system/consul.service'],
    ],
  }
}
