# Compiles role::web (in --noop) and prints the content of the files whose
# format other programs depend on, base64-encoded, one notice per file, for
# check_rendered.py. Used by .ci/iac-check; never applied for real.
include role::web

$extracted = [
  '/etc/rollgate/rollgate.toml',
  '/etc/systemd/system/rollgate-agent.service',
  '/etc/systemd/system/web.service',
  '/etc/apache2/sites-available/web.conf',
  '/etc/consul.d/consul.hcl',
  '/etc/systemd/system/consul.service',
  '/etc/systemd/system/consul-secrets.path',
  '/etc/systemd/system/consul-secrets.service',
  '/etc/systemd/system/rollgate-consul-acl.service',
]

$extracted.each |String $path| {
  $content = File[$path]['content']
  notice("EXTRACT ${path} ${String(Binary.new($content, '%r'))}")
}
