# @summary Apache in front of the `web` app: port 80, reverse proxy to loopback.
#
# Consul advertises this port and its HTTP check goes through it, so a node
# is only passing when both Apache and the app answer. The Debian default
# site is disabled; only the `web` vhost is served.
#
# @param port
#   Port Apache listens on (the port Consul advertises).
# @param backend_host
#   Address of the app.
# @param backend_port
#   Port of the app.
# @param server_name
#   ServerName of the vhost.
# @param proxy_timeout
#   Seconds Apache waits for the app on ordinary requests.
# @param health_timeout
#   Seconds Apache waits for the app on /health, shorter than the Consul
#   check timeout so a hung app shows as a 5xx, not as a check timeout.
# @param disabled_marker
#   When this file exists at boot Apache does not start (nodes that boot
#   from this image but are not `web` nodes write it).
class web::apache (
  Integer[1, 65535] $port            = 80,
  String[1]         $backend_host    = '127.0.0.1',
  Integer[1, 65535] $backend_port    = 8080,
  String[1]         $server_name     = 'web.service.consul',
  Integer[1, 600]   $proxy_timeout   = 30,
  Integer[1, 60]    $health_timeout  = 1,
  Pattern[/\A\//]   $disabled_marker = '/etc/rollgate/web-disabled',
) {
  package { 'apache2':
    ensure => installed,
  }

  # a2enmod resolves module dependencies; `creates` keeps it idempotent.
  ['proxy', 'proxy_http'].each |String $module| {
    exec { "a2enmod ${module}":
      command => "/usr/sbin/a2enmod ${module}",
      creates => "/etc/apache2/mods-enabled/${module}.load",
      require => Package['apache2'],
      notify  => Service['apache2'],
    }
  }

  file { '/etc/apache2/ports.conf':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('web/ports.conf.epp', { 'port' => $port }),
    require => Package['apache2'],
    notify  => Service['apache2'],
  }

  file { '/etc/apache2/conf-available/web-hardening.conf':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('web/hardening.conf.epp'),
    require => Package['apache2'],
  }

  file { '/etc/apache2/conf-enabled/web-hardening.conf':
    ensure  => link,
    target  => '../conf-available/web-hardening.conf',
    require => File['/etc/apache2/conf-available/web-hardening.conf'],
    notify  => Service['apache2'],
  }

  file { '/etc/apache2/sites-available/web.conf':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('web/vhost.conf.epp', {
        'port'           => $port,
        'server_name'    => $server_name,
        'backend'        => "http://${backend_host}:${backend_port}",
        'proxy_timeout'  => $proxy_timeout,
        'health_timeout' => $health_timeout,
    }),
    require => Package['apache2'],
  }

  file { '/etc/apache2/sites-enabled/web.conf':
    ensure  => link,
    target  => '../sites-available/web.conf',
    require => [File['/etc/apache2/sites-available/web.conf'], Exec['a2enmod proxy_http']],
    notify  => Service['apache2'],
  }

  file { '/etc/apache2/sites-enabled/000-default.conf':
    ensure  => absent,
    require => Package['apache2'],
    notify  => Service['apache2'],
  }

  file { '/etc/systemd/system/apache2.service.d':
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }

  file { '/etc/systemd/system/apache2.service.d/rollgate.conf':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('web/apache2-dropin.conf.epp', { 'disabled_marker' => $disabled_marker }),
  }

  # Enabled, not started by this class; a running Apache (the package starts
  # it) is restarted when its configuration changes.
  service { 'apache2':
    enable    => true,
    require   => Package['apache2'],
    subscribe => File['/etc/systemd/system/apache2.service.d/rollgate.conf'],
  }
}
