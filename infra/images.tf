# The image every rollgate node boots from: the newest AMI of var.artifact
# built by images/ in this account (tag rollgate:artifact). Build and publish
# one before the first apply, or this lookup fails the plan.

data "aws_ami" "web" {
  most_recent = true
  owners      = ["self"]

  filter {
    name   = "tag:rollgate:artifact"
    values = [var.artifact]
  }

  filter {
    name   = "state"
    values = ["available"]
  }

  # The Consul settings are baked into the image; an image built for another
  # datacenter or join tag would boot agents that never find the servers.
  lifecycle {
    postcondition {
      condition     = try(self.tags["rollgate:consul-datacenter"], "") == var.consul_datacenter
      error_message = "The newest image of ${var.artifact} (${self.id}) was built for Consul datacenter '${try(self.tags["rollgate:consul-datacenter"], "unknown")}', not '${var.consul_datacenter}': build it with -var consul_datacenter=${var.consul_datacenter} or change var.consul_datacenter."
    }
    postcondition {
      condition     = try(self.tags["rollgate:consul-join"], "") == "${var.consul_join_tag_key}=${var.consul_join_tag_value}"
      error_message = "The newest image of ${var.artifact} (${self.id}) joins Consul servers tagged '${try(self.tags["rollgate:consul-join"], "unknown")}', not '${var.consul_join_tag_key}=${var.consul_join_tag_value}': rebuild it with matching consul_join_tag_key/consul_join_tag_value."
    }
  }
}

locals {
  consul_ca_path = "/etc/consul.d/tls/ca.pem"

  # Written by the user data of non-web nodes; the web stack's units do not
  # start when it exists (puppet/modules/role/manifests/web.pp).
  web_disabled_marker = "/etc/rollgate/web-disabled"
}
