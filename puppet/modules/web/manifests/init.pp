# @summary The `web` application: binary, system user and a hardened systemd unit.
#
# The app listens on loopback only; Apache (web::apache) is what the network
# and Consul see. The unit is enabled, not started: it starts on first boot.
#
# @param version
#   The release baked into the image, exported to the app as WEB_VERSION.
# @param binary_source
#   Path of the release binary on the machine that runs Puppet (the Packer
#   build instance), copied to `binary_path`.
# @param binary_path
#   Where the binary is installed.
# @param user
#   System user (and group) the app runs as; it owns no files.
# @param listen_address
#   Address the app binds; loopback so only Apache can reach it.
# @param port
#   Port the app binds.
# @param disabled_marker
#   When this file exists at boot the unit does not start (nodes that boot
#   from this image but are not `web` nodes write it).
# @param restart_sec
#   Seconds systemd waits before restarting the app after it exits.
# @param stop_timeout_sec
#   Seconds the app gets to finish in-flight requests after SIGTERM.
class web (
  String[1]                        $version,
  Pattern[/\A\//]                  $binary_source    = '/tmp/build/web',
  Pattern[/\A\//]                  $binary_path      = '/usr/local/bin/web',
  Pattern[/\A[a-z_][a-z0-9_-]*\z/] $user             = 'web',
  String[1]                        $listen_address   = '127.0.0.1',
  Integer[1, 65535]                $port             = 8080,
  Pattern[/\A\//]                  $disabled_marker  = '/etc/rollgate/web-disabled',
  Integer[1, 300]                  $restart_sec      = 2,
  Integer[1, 3600]                 $stop_timeout_sec = 30,
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
    comment    => 'web application',
    require    => Group[$user],
  }

  file { $binary_path:
    ensure => file,
    source => $binary_source,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  file { '/etc/systemd/system/web.service':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('web/web.service.epp', {
        'version'          => $version,
        'binary_path'      => $binary_path,
        'user'             => $user,
        'listen'           => "${listen_address}:${port}",
        'disabled_marker'  => $disabled_marker,
        'restart_sec'      => $restart_sec,
        'stop_timeout_sec' => $stop_timeout_sec,
    }),
  }

  # Enabled, not started: see the class summary. The systemd provider reloads
  # the unit files itself before it enables a unit whose file changed.
  service { 'web':
    enable    => true,
    subscribe => [File[$binary_path], File['/etc/systemd/system/web.service']],
    require   => User[$user],
  }
}
