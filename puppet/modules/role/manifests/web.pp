# @summary The `web` node: app behind Apache, Consul client agent, rollgate agent.
#
# Values that change per build come in as facts set by the Packer provisioner
# (`FACTER_rollgate_version=... puppet apply ...`), so the same manifests
# build every version and nothing in this tree has to be edited for a release:
#
# * `rollgate_version` (required): the version being baked; the app reports
#   it on /version and the rollgate agent checks it against `expected_version`.
# * `rollgate_artifact` (required): the artifact name, e.g. `acmeinc/web`.
# * `rollgate_build_dir`: where Packer uploaded the release binaries
#   (default `/tmp/build`).
# * `consul_datacenter`, `consul_join_tag_key`, `consul_join_tag_value`: how
#   the Consul agent finds the servers; they must match `infra/`.
#
# Nothing is started while the image is baked: services are only enabled, and
# start on the first boot of an instance launched from the image.
class role::web {
  $version = $facts['rollgate_version']
  $artifact = $facts['rollgate_artifact']
  unless $version =~ String[1] {
    fail('role::web: the fact rollgate_version is not set; run puppet apply with FACTER_rollgate_version=<version>')
  }
  unless $artifact =~ Pattern[/\A[a-z0-9][a-z0-9._-]*\/[a-z0-9][a-z0-9._-]*\z/] {
    fail("role::web: the fact rollgate_artifact must look like 'acmeinc/web', got '${artifact}'")
  }

  $build_dir = $facts['rollgate_build_dir'] ? {
    String[1] => $facts['rollgate_build_dir'],
    default   => '/tmp/build',
  }
  $datacenter = $facts['consul_datacenter'] ? {
    String[1] => $facts['consul_datacenter'],
    default   => 'dc1',
  }
  $join_tag_key = $facts['consul_join_tag_key'] ? {
    String[1] => $facts['consul_join_tag_key'],
    default   => 'consul-cluster',
  }
  $join_tag_value = $facts['consul_join_tag_value'] ? {
    String[1] => $facts['consul_join_tag_value'],
    default   => 'rollgate',
  }

  # Consul servers and coordinators boot from this same image (it carries the
  # consul and rollgate binaries); their user data writes this file so the web
  # stack stays down on them.
  $web_disabled_marker = '/etc/rollgate/web-disabled'

  class { 'node_secrets': }

  # Inert except on Consul servers, whose user data configures it.
  class { 'consul_acl':
    require => Class['node_secrets'],
  }

  class { 'consul_agent':
    datacenter     => $datacenter,
    join_tag_key   => $join_tag_key,
    join_tag_value => $join_tag_value,
  }

  class { 'web':
    version         => $version,
    binary_source   => "${build_dir}/web",
    disabled_marker => $web_disabled_marker,
  }

  class { 'web::apache':
    backend_port    => $web::port,
    disabled_marker => $web_disabled_marker,
  }

  class { 'rollgate':
    binary_source    => "${build_dir}/rollgate",
    artifact         => $artifact,
    expected_version => $version,
    app_url          => "http://127.0.0.1:${web::port}",
    service_port     => $web::apache::port,
    check_url        => "http://127.0.0.1:${web::apache::port}/health",
    disabled_marker  => $web_disabled_marker,
  }
}
