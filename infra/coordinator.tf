# The rollgate coordinator: var.coordinator_count instances (1, or 2 for a
# hot standby; the leader is elected with a Consul lock) in a fixed-size Auto
# Scaling group, so a lost instance comes back by itself.
#
# They boot from var.node_image_id and run `rollgate coordinator` with the
# configuration rendered from templates/coordinator.toml.tftpl, the one place
# to edit when the coordinator's configuration changes.

locals {
  # Inputs of templates/coordinator.toml.tftpl. File paths are where
  # node-secrets.service writes the secrets at boot (node_secrets_json below).
  coordinator_config_vars = {
    consul_token_file  = "/etc/rollgate/consul-token"
    service_name       = "web"
    auto_scaling_group = local.web_asg_name
    launch_template    = aws_launch_template.web.name
    artifact           = var.artifact
    approval           = var.approval
    batch_size         = var.rollout_batch_size
    min_healthy_time   = var.rollout_min_healthy_time
    healthy_deadline   = var.rollout_healthy_deadline
    progress_deadline  = var.rollout_progress_deadline
    slack_token_file   = "/etc/rollgate/slack-token"
    slack_channel      = var.slack_channel
    smtp_host          = var.smtp_host
    smtp_port          = var.smtp_port
    smtp_username      = var.smtp_username
    smtp_password_file = "/etc/rollgate/smtp-password"
    email_from         = var.email_from
    email_to           = var.email_to
  }

  coordinator_user_data_vars = {
    consul_ca_pem       = var.consul_ca_cert_pem
    consul_ca_path      = local.consul_ca_path
    web_disabled_marker = local.web_disabled_marker
    coordinator_toml    = templatefile("${path.module}/templates/coordinator.toml.tftpl", local.coordinator_config_vars)
    coordinator_unit    = file("${path.module}/templates/rollgate-coordinator.service")
    node_secrets_json = jsonencode({
      region = var.region
      secrets = [
        {
          # The Consul agent's own token (node identity <instance id>),
          # minted per instance by the Consul servers' ACL bootstrap.
          secret_id = "${local.node_token_secret_prefix}{instance_id}"
          path      = "/etc/consul.d/acl-token.hcl"
          owner     = "root"
          group     = "consul"
          mode      = "0640"
          format    = "consul-node-token"
        },
        {
          secret_id = aws_secretsmanager_secret.this["consul-coordinator-token"].arn
          path      = local.coordinator_config_vars.consul_token_file
          owner     = "root"
          group     = "rollgate"
          mode      = "0640"
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
          secret_id = aws_secretsmanager_secret.this["slack-token"].arn
          path      = local.coordinator_config_vars.slack_token_file
          owner     = "root"
          group     = "rollgate"
          mode      = "0640"
          format    = "raw"
        },
        {
          secret_id = aws_secretsmanager_secret.this["smtp-password"].arn
          path      = local.coordinator_config_vars.smtp_password_file
          owner     = "root"
          group     = "rollgate"
          mode      = "0640"
          format    = "raw"
        },
      ]
    })
  }
}

resource "aws_launch_template" "coordinator" {
  name        = "${local.name}-coordinator"
  description = "rollgate coordinators"

  image_id               = var.node_image_id
  instance_type          = var.coordinator_instance_type
  vpc_security_group_ids = [aws_security_group.coordinator.id, aws_security_group.consul.id, aws_security_group.node_egress.id]
  user_data              = base64encode(templatefile("${path.module}/templates/coordinator-user-data.yaml.tftpl", local.coordinator_user_data_vars))

  iam_instance_profile {
    arn = aws_iam_instance_profile.coordinator.arn
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
      Name = "${local.name}-coordinator"
    }
  }

  # The image is var.node_image_id, not the newest web image, so a new web
  # image does not replace the coordinators. Changing it (or the user data)
  # writes a new version, which the instance refresh below rolls out.
}

locals {
  coordinator_asg_name = "${local.name}-coordinator"
}

resource "aws_autoscaling_group" "coordinator" {
  name                = local.coordinator_asg_name
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.coordinator_count
  max_size            = var.coordinator_count
  desired_capacity    = var.coordinator_count
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.coordinator.id
    version = aws_launch_template.coordinator.latest_version
  }

  # Roll the coordinators when their configuration changes; one at a time,
  # so the standby keeps the lock.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  tag {
    key                 = "Name"
    value               = "${local.name}-coordinator"
    propagate_at_launch = true
  }
}
