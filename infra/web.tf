# The web fleet: a launch template and an Auto Scaling group behind the ALB.
#
# One owner per field (README.md, "Ownership after creation"):
#
#   launch template   Terraform owns every field but the image, and makes
#                     each version it writes the default version. The
#                     coordinator creates its versions by copying the
#                     default version (description included) and changing
#                     only the image, so Terraform reads back exactly what it
#                     wrote apart from image_id, the one field it ignores.
#   group             Terraform owns everything but the pinned template
#                     version, the desired capacity and the suspended
#                     processes, which the coordinator moves during a
#                     rollout. min_size/max_size stay Terraform's: an apply
#                     while a rollout runs (its processes suspended) is
#                     refused (the precondition below) rather than shrinking
#                     the group under the rollout's surge.

locals {
  web_asg_name = "${local.name}-web"

  # Security groups of the web nodes; the coordinator may launch with these
  # and no others (iam.tf).
  web_security_group_ids = [aws_security_group.web.id, aws_security_group.consul.id, aws_security_group.node_egress.id]

  # Auto Scaling processes the coordinator suspends while a rollout runs
  # (SUSPENDED_PROCESSES in rollgate's rollout machine).
  rollout_suspended_processes = ["AZRebalance", "AlarmNotification", "ScheduledActions"]

  web_user_data_vars = {
    consul_ca_pem  = var.consul_ca_cert_pem
    consul_ca_path = local.consul_ca_path
    node_secrets_json = jsonencode({
      region = var.region
      secrets = [
        {
          # This instance's own Consul token (node identity <instance id>,
          # service identity web, role rollgate-agent), minted by the Consul
          # servers' ACL bootstrap; node-secrets waits until it exists.
          secret_id = "${local.node_token_secret_prefix}{instance_id}"
          path      = "/etc/consul.d/acl-token.hcl"
          owner     = "root"
          group     = "consul"
          mode      = "0640"
          format    = "consul-node-token"
        },
        {
          secret_id = "${local.node_token_secret_prefix}{instance_id}"
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
  name = "${local.name}-web"
  # Copied unchanged into every version the coordinator creates.
  description = "rollgate web nodes (Terraform owns every field but the image)"

  # Each version Terraform writes becomes the default: the version the
  # coordinator copies for its next rollout. The group never launches the
  # default version itself (it is pinned to the coordinator's versions).
  update_default_version = true

  # Only the first version launches this image. Afterwards the image of a
  # version Terraform writes is whatever the template's latest version held
  # (ignore_changes keeps the value read back): a placeholder, since the
  # coordinator replaces the image of every version it launches.
  image_id               = data.aws_ami.web.id
  instance_type          = var.web_instance_type
  vpc_security_group_ids = local.web_security_group_ids
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

  # The image is the coordinator's: see above.
  lifecycle {
    ignore_changes = [image_id]
  }
}

# The group as it is now, if it exists: the rollout guard reads it.
data "aws_autoscaling_groups" "web_existing" {
  names = [local.web_asg_name]
}

data "aws_autoscaling_group" "web_live" {
  count = length(data.aws_autoscaling_groups.web_existing.names)
  name  = local.web_asg_name
}

locals {
  # A rollout suspends these processes before it changes anything else and
  # resumes them after it has put the sizes back, so "suspended" covers the
  # whole time max_size may be raised. (Comparing max_size with
  # var.web_max_size instead would refuse an apply that lowers it.)
  web_live                = one(data.aws_autoscaling_group.web_live)
  web_rollout_suspended   = local.web_live == null ? [] : sort(setintersection(local.web_live.suspended_processes, local.rollout_suspended_processes))
  web_rollout_in_progress = length(local.web_rollout_suspended) > 0
}

resource "aws_autoscaling_group" "web" {
  name                = local.web_asg_name
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.web_min_size
  max_size            = var.web_max_size
  desired_capacity    = var.web_desired_capacity

  # An instance the ALB finds unhealthy is replaced by the group. The ALB
  # asks the rollgate agent's /ready, which answers from the node's Consul
  # checks (alb.tf): one verdict for Consul, the ALB and the group.
  health_check_type         = "ELB"
  health_check_grace_period = 180
  target_group_arns         = [aws_lb_target_group.web.arn]
  wait_for_capacity_timeout = "15m"

  # Pinned version, never $Latest/$Default: what runs is always explicit.
  # At creation that is Terraform's first version; afterwards the
  # coordinator's.
  launch_template {
    id      = aws_launch_template.web.id
    version = aws_launch_template.web.default_version
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

  lifecycle {
    # The coordinator's fields. launch_template: it pins each version it
    # rolls out (and the previous one on revert); a Terraform change to the
    # template reaches instances through a rollgate plan, approval and surge
    # rollout, never by Terraform moving the pin. desired_capacity: it surges
    # by a batch. suspended_processes: it suspends AZRebalance,
    # AlarmNotification and ScheduledActions for the rollout's duration.
    ignore_changes = [launch_template, desired_capacity, suspended_processes]

    # max_size (and min_size) stay Terraform's, but a rollout raises
    # max_size for its surge: applying now would shrink the group under it.
    precondition {
      condition     = !local.web_rollout_in_progress
      error_message = "The web group ${local.web_asg_name} is in the middle of a rollgate rollout: ${join(", ", local.web_rollout_suspended)} suspended, max_size ${local.web_live == null ? "unknown" : local.web_live.max_size} (${var.web_max_size} here). Applying now would lower max_size under the rollout's surge. Wait until `rollgate status` shows it finished, or abort it (`rollgate abort`), then plan again. If no rollout runs, someone suspended these processes by hand: resume them (aws autoscaling resume-processes) first."
    }
  }
}
