# Consul servers: var.consul_server_count instances in an Auto Scaling group
# spread over the private subnets. Every Consul agent (web nodes,
# coordinators, the servers themselves) finds them by the auto-join tag
# (var.consul_join_tag_key = var.consul_join_tag_value), which only these
# instances carry.
#
# They boot from var.node_image_id (an image built by images/, which has the
# consul binary and unit); their user data keeps the web stack down,
# replaces the client settings with server settings, fetches the servers'
# secrets and configures the ACL bootstrap (consul-acl.tf).
# Replace servers one at a time and wait for the cluster to be healthy in
# between (e.g. `consul operator raft list-peers`); autopilot removes dead
# servers.

locals {
  consul_server_user_data_vars = {
    consul_ca_pem          = var.consul_ca_cert_pem
    consul_ca_path         = local.consul_ca_path
    consul_server_cert_pem = var.consul_server_cert_pem
    web_disabled_marker    = local.web_disabled_marker
    bootstrap_expect       = var.consul_server_count
    consul_acl_json        = jsonencode(local.consul_acl_config)
    node_secrets_json = jsonencode({
      region = var.region
      secrets = [
        {
          secret_id = aws_secretsmanager_secret.this["consul-management-token"].arn
          path      = "/etc/consul.d/acl-management.hcl"
          owner     = "root"
          group     = "consul"
          mode      = "0640"
          format    = "consul-initial-management-token"
        },
        {
          # The same token, raw, for the ACL bootstrap (consul-acl.tf).
          secret_id = aws_secretsmanager_secret.this["consul-management-token"].arn
          path      = local.consul_acl_config.management_token_file
          owner     = "root"
          group     = "root"
          mode      = "0600"
          format    = "raw"
        },
        {
          secret_id = aws_secretsmanager_secret.this["consul-gossip-key"].arn
          path      = "/etc/consul.d/gossip.hcl"
          owner     = "root"
          group     = "consul"
          mode      = "0640"
          format    = "consul-encrypt"
        },
        {
          secret_id = aws_secretsmanager_secret.this["consul-server-tls-key"].arn
          path      = "/etc/consul.d/tls/server-key.pem"
          owner     = "root"
          group     = "consul"
          mode      = "0640"
          format    = "raw"
        },
      ]
    })
  }
}

locals {
  consul_server_user_data = templatefile("${path.module}/templates/consul-server-user-data.yaml.tftpl", local.consul_server_user_data_vars)
}

resource "aws_launch_template" "consul_server" {
  name        = "${local.name}-consul-server"
  description = "rollgate Consul servers"

  image_id               = var.node_image_id
  instance_type          = var.consul_instance_type
  vpc_security_group_ids = [aws_security_group.consul.id, aws_security_group.node_egress.id]
  user_data              = base64encode(local.consul_server_user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.consul_server.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name = "${local.name}-consul-server"
    }
  }

  lifecycle {
    # EC2 takes at most 16 KB of user data; the policy files of config/acl
    # travel in it.
    precondition {
      condition     = length(local.consul_server_user_data) <= 16384
      error_message = "The Consul servers' user data is ${length(local.consul_server_user_data)} bytes, over EC2's 16384: the ACL policy files in config/acl (${join(", ", keys(local.consul_acl_policies))}) are too large to travel in it."
    }
  }

  # The image is var.node_image_id, never the newest web image: a new web
  # image must not churn the Consul servers. Changing node_image_id writes a
  # new version here; the group launches it for every server it replaces
  # from then on (replace servers one at a time, see the top of this file).
}

resource "aws_autoscaling_group" "consul_server" {
  name                = "${local.name}-consul-server"
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.consul_server_count
  max_size            = var.consul_server_count
  desired_capacity    = var.consul_server_count
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.consul_server.id
    version = aws_launch_template.consul_server.latest_version
  }

  # The cloud auto-join tag. Not rollgate:managed: the coordinator cannot
  # touch this group.
  tag {
    key                 = var.consul_join_tag_key
    value               = var.consul_join_tag_value
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = "${local.name}-consul-server"
    propagate_at_launch = true
  }
}
