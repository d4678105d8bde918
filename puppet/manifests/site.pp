# Entry point of the masterless Puppet run made while Packer bakes the image.
#
# Every node built from this tree is a `web` node: the image is immutable and
# nodes never run Puppet again after boot, so there is no node matching.
node default {
  include role::web
}
