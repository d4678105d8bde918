# @summary The rollgate node agent: binary, configuration and systemd unit.
#
# The agent registers the `web` service with the local Consul agent, keeps
# its TTL check true from local probes of the app, and drains the node when
# systemd stops it: maintenance mode, wait `drain_time`, deregister. The
# unit's stop timeout is derived from `drain_time` so systemd never kills the
# agent in the middle of a drain.
#
# @param expected_version
#   The app version baked into this image; the agent reports the node as
#   failing if /version of the app answers anything else.
# @param artifact
#   The artifact this image was built as, e.g. `acmeinc/web`.
# @param binary_source
#   Path of the release binary on the machine that runs Puppet (the Packer
#   build instance), copied to `binary_path`.
# @param binary_path
#   Where the binary is installed.
# @param config_dir
#   Directory of the configuration file and of the Consul token file.
# @param user
#   System user (and group) the agent runs as; the group may read the token.
# @param consul_address
#   URL of the local Consul agent's HTTP API.
# @param consul_token_file
#   File holding the Consul ACL token, written at boot by node-secrets;
#   `undef` when ACLs are off.
# @param consul_ca_file
#   CA certificate for an HTTPS Consul address; `undef` to leave it out.
# @param consul_timeout
#   Timeout of one Consul request (blocking queries add their wait).
# @param log_format
#   Log format of the agent.
# @param log_level
#   Log level of the agent.
# @param service_name
#   Name the service is registered under in Consul.
# @param service_port
#   Port Consul advertises for the service (Apache, not the app).
# @param tags
#   Consul tags of the service.
# @param app_url
#   Base URL of the app; the agent probes /health and /version there.
# @param check_url
#   URL of the HTTP check that Consul runs itself (through Apache).
# @param check_interval
#   Interval of that HTTP check.
# @param check_timeout
#   Timeout of that HTTP check.
# @param ttl
#   TTL of the agent's own check; the agent refreshes it at least twice per TTL.
# @param deregister_critical_after
#   Consul removes the service after it has been critical this long (dead nodes).
# @param drain_time
#   Time between entering maintenance mode and deregistering on shutdown.
# @param ready_listen
#   Address of the agent's readiness endpoint (GET /ready: 200 only while
#   every Consul check of the node's service passes). The load balancer's
#   health check asks it (infra/alb.tf, var.agent_ready_port), so the ALB
#   follows Consul's verdict.
# @param stop_margin_seconds
#   Seconds added to `drain_time` for the unit's TimeoutStopSec.
# @param disabled_marker
#   When this file exists at boot the unit does not start (nodes that boot
#   from this image but are not `web` nodes write it).
class rollgate (
  String[1]                                                 $expected_version,
  Pattern[/\A[a-z0-9][a-z0-9._-]*\/[a-z0-9][a-z0-9._-]*\z/] $artifact                  = 'acmeinc/web',
  Pattern[/\A\//]                                           $binary_source             = '/tmp/build/rollgate',
  Pattern[/\A\//]                                           $binary_path               = '/usr/local/bin/rollgate',
  Pattern[/\A\//]                                           $config_dir                = '/etc/rollgate',
  Pattern[/\A[a-z_][a-z0-9_-]*\z/]                          $user                      = 'rollgate',
  Pattern[/\Ahttps?:\/\/[^\s]+\z/]                          $consul_address            = 'http://127.0.0.1:8500',
  Optional[Pattern[/\A\//]]                                 $consul_token_file         = '/etc/rollgate/consul-token',
  Optional[Pattern[/\A\//]]                                 $consul_ca_file            = '/etc/consul.d/tls/ca.pem',
  Rollgate::Duration                                        $consul_timeout            = '10s',
  Enum['text', 'json']                                      $log_format                = 'json',
  Enum['trace', 'debug', 'info', 'warn', 'error']           $log_level                 = 'info',
  Pattern[/\A[a-zA-Z0-9-]+\z/]                              $service_name              = 'web',
  Integer[1, 65535]                                         $service_port              = 80,
  Array[String[1]]                                          $tags                      = ['web'],
  Pattern[/\Ahttps?:\/\/[^\s\/]+\z/]                        $app_url                   = 'http://127.0.0.1:8080',
  Pattern[/\Ahttps?:\/\/[^\s]+\z/]                          $check_url                 = 'http://127.0.0.1:80/health',
  Rollgate::Duration                                        $check_interval            = '5s',
  Rollgate::Duration                                        $check_timeout             = '2s',
  Rollgate::Duration                                        $ttl                       = '10s',
  Rollgate::Duration                                        $deregister_critical_after = '5m',
  Rollgate::Duration                                        $drain_time                = '15s',
  Pattern[/\A[0-9.]+:[0-9]{1,5}\z/]                         $ready_listen              = '0.0.0.0:9102',
  Integer[1, 600]                                           $stop_margin_seconds       = 15,
  Pattern[/\A\//]                                           $disabled_marker           = '/etc/rollgate/web-disabled',
) {
  group { $user:
    ensure => present,
    system => true,
  }

  user { $user:
    ensure     => present,
    system     => true,
    gid        => $user,
    home       => '/nonexistent',
    managehome => false,
    shell      => '/usr/sbin/nologin',
    comment    => 'rollgate agent',
    require    => Group[$user],
  }

  file { $binary_path:
    ensure => file,
    source => $binary_source,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  # Owned by root and readable by the agent's group: the agent reads its
  # configuration and token, it never writes here.
  file { $config_dir:
    ensure  => directory,
    owner   => 'root',
    group   => $user,
    mode    => '0750',
    require => Group[$user],
  }

  file { "${config_dir}/rollgate.toml":
    ensure  => file,
    owner   => 'root',
    group   => $user,
    mode    => '0640',
    content => epp('rollgate/rollgate.toml.epp', {
        'consul_address'            => $consul_address,
        'consul_token_file'         => $consul_token_file,
        'consul_ca_file'            => $consul_ca_file,
        'consul_timeout'            => $consul_timeout,
        'log_format'                => $log_format,
        'log_level'                 => $log_level,
        'service_name'              => $service_name,
        'service_port'              => $service_port,
        'tags'                      => $tags,
        'artifact'                  => $artifact,
        'expected_version'          => $expected_version,
        'app_url'                   => $app_url,
        'check_url'                 => $check_url,
        'check_interval'            => $check_interval,
        'check_timeout'             => $check_timeout,
        'ttl'                       => $ttl,
        'deregister_critical_after' => $deregister_critical_after,
        'drain_time'                => $drain_time,
        'ready_listen'              => $ready_listen,
    }),
  }

  file { '/etc/systemd/system/rollgate-agent.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('rollgate/rollgate-agent.service.epp', {
        'binary_path'         => $binary_path,
        'config_file'         => "${config_dir}/rollgate.toml",
        'user'                => $user,
        'drain_time'          => $drain_time,
        'stop_margin_seconds' => $stop_margin_seconds,
        'disabled_marker'     => $disabled_marker,
    }),
  }

  service { 'rollgate-agent':
    enable    => true,
    require   => User[$user],
    subscribe => [
      File[$binary_path],
      File["${config_dir}/rollgate.toml"],
      File['/etc/systemd/system/rollgate-agent.service'],
    ],
  }
}
