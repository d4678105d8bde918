# The web fleet: a launch template and an Auto Scaling group behind the ALB.
#
# Terraform creates both; from then on the rollgate coordinator owns the
# launch template's versions and the group's desired capacity (see the
# lifecycle blocks below).

locals {
  web_asg_name = "${local.name}-web"

  web_user_data_vars = {
    consul_ca_pem  = var.consul_ca_cert_pem
    consul_ca_path = local.consul_ca_path
    node_secrets_json = jsonencode({
      region = var.region
      secrets = [
        {
          secret_id = aws_secretsmanager_secret.this["consul-web-token"].arn
          path      = "/etc/consul.d/acl-token.hcl"
          owner     = "root"
          group     = "consul"
          mode      = "0640"
          format    = "consul-agent-token"
        },
        {
          secret_id = aws_secretsmanager_secret.this["consul-web-token"].arn
          path      = "/etc/rollgate/consul-token"
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
      ]
    })
  }
}

resource "aws_launch_template" "web" {
  name        = "${local.name}-web"
  description = "rollgate web nodes; new versions are created by the rollgate coordinator"

  image_id               = data.aws_ami.web.id
  instance_type          = var.web_instance_type
  vpc_security_group_ids = [aws_security_group.web.id, aws_security_group.consul.id, aws_security_group.node_egress.id]
  user_data              = base64encode(templatefile("${path.module}/templates/web-user-data.yaml.tftpl", local.web_user_data_vars))

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name                = "${local.name}-web"
      "rollgate:artifact" = var.artifact
    }
  }

  tag_specifications {
    resource_type = "volume"
    tags = {
      Name = "${local.name}-web"
    }
  }

  # The coordinator creates a new version for every image it rolls out.
  # Terraform keeps the image it started with, so a later apply neither
  # reverts a rollout nor rolls out an image nobody approved.
  lifecycle {
    ignore_changes = [image_id]
  }
}

resource "aws_autoscaling_group" "web" {
  name                = local.web_asg_name
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.web_min_size
  max_size            = var.web_max_size
  desired_capacity    = var.web_desired_capacity

  # An instance the ALB finds unhealthy is replaced by the group.
  health_check_type         = "ELB"
  health_check_grace_period = 180
  target_group_arns         = [aws_lb_target_group.web.arn]
  wait_for_capacity_timeout = "15m"

  # Pinned version, never $Latest/$Default: what runs is always explicit.
  launch_template {
    id      = aws_launch_template.web.id
    version = aws_launch_template.web.latest_version
  }

  enabled_metrics = [
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
  ]

  # The coordinator's IAM policy allows changes only to groups with this tag
  # (autoscaling:ResourceTag/rollgate:managed); it cannot set tags itself.
  tag {
    key                 = "rollgate:managed"
    value               = "true"
    propagate_at_launch = false
  }

  tag {
    key                 = "rollgate:artifact"
    value               = var.artifact
    propagate_at_launch = false
  }

  tag {
    key                 = "Name"
    value               = "${local.name}-web"
    propagate_at_launch = true
  }

  # After creation the coordinator owns these two: it points the group at the
  # launch template version of each image it rolls out (and back on revert),
  # and surges the desired capacity by a batch during a rollout. If Terraform
  # managed them, the next apply would undo a rollout mid-flight or put the
  # group back on the first image. Change them through rollgate instead.
  lifecycle {
    ignore_changes = [launch_template, desired_capacity]
  }
}
