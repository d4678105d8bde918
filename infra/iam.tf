# Instance roles, least privilege.
#
#   web node       ec2:DescribeInstances (Consul cloud auto-join) + read of
#                  its own secrets. Nothing else: a compromised web node can
#                  list instances and read its own Consul token, no more.
#   Consul server  the same, with the servers' secrets.
#   coordinator    exactly the EC2 and Auto Scaling calls rollgate makes, each
#                  scoped as tightly as AWS allows, + the actions AWS checks
#                  on its behalf when it updates the group, + its secrets.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    sid     = "Ec2AssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# ---------------------------------------------------------------------------
# Web nodes
# ---------------------------------------------------------------------------

resource "aws_iam_role" "node" {
  name               = "${local.name}-web-node"
  description        = "rollgate web nodes: Consul auto-join and their own secrets"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "node" {
  name = "${local.name}-web-node"
  role = aws_iam_role.node.name
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "ConsulCloudAutoJoin"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"] # Describe calls support no resource-level permissions.
  }

  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns_by_reader["web"]
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "web-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

# ---------------------------------------------------------------------------
# Consul servers
# ---------------------------------------------------------------------------

resource "aws_iam_role" "consul_server" {
  name               = "${local.name}-consul-server"
  description        = "rollgate Consul servers: Consul auto-join and their own secrets"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "consul_server" {
  name = "${local.name}-consul-server"
  role = aws_iam_role.consul_server.name
}

data "aws_iam_policy_document" "consul_server" {
  statement {
    sid       = "ConsulCloudAutoJoin"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns_by_reader["consul_server"]
  }
}

resource "aws_iam_role_policy" "consul_server" {
  name   = "consul-server"
  role   = aws_iam_role.consul_server.id
  policy = data.aws_iam_policy_document.consul_server.json
}

# ---------------------------------------------------------------------------
# Coordinator
# ---------------------------------------------------------------------------

# ===== BEGIN coordinator allowed actions ====================================
# The AWS API operations the rollgate coordinator calls, and nothing else.
# A test compares these two lists with the aws-sdk-ec2 and aws-sdk-autoscaling
# operations used in agent/src/aws/: add an action here in the same change
# that makes the code call it. Plain string literals only (the test parses
# this block).
locals {
  coordinator_ec2_actions = [
    "ec2:DescribeImages",
    "ec2:CreateTags",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:CreateLaunchTemplateVersion",
  ]

  coordinator_autoscaling_actions = [
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:UpdateAutoScalingGroup",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:SetInstanceProtection",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:SuspendProcesses",
    "autoscaling:ResumeProcesses",
  ]
}
# ===== END coordinator allowed actions ======================================

locals {
  # How each action above is scoped. Every action must fall in exactly one
  # group; a precondition on the policy below fails the plan otherwise, so a
  # new action cannot be granted on "*" by accident.
  coordinator_ec2_read_actions      = [for a in local.coordinator_ec2_actions : a if startswith(a, "ec2:Describe")]
  coordinator_ec2_image_tag_actions = [for a in local.coordinator_ec2_actions : a if a == "ec2:CreateTags"]
  coordinator_ec2_template_actions  = [for a in local.coordinator_ec2_actions : a if a == "ec2:CreateLaunchTemplateVersion"]

  coordinator_autoscaling_read_actions  = [for a in local.coordinator_autoscaling_actions : a if startswith(a, "autoscaling:Describe")]
  coordinator_autoscaling_write_actions = [for a in local.coordinator_autoscaling_actions : a if !startswith(a, "autoscaling:Describe")]

  coordinator_unscoped_actions = setsubtract(
    concat(local.coordinator_ec2_actions, local.coordinator_autoscaling_actions),
    concat(
      local.coordinator_ec2_read_actions,
      local.coordinator_ec2_image_tag_actions,
      local.coordinator_ec2_template_actions,
      local.coordinator_autoscaling_read_actions,
      local.coordinator_autoscaling_write_actions,
    ),
  )

  # Not calls rollgate makes, but checks AWS makes with the caller's
  # permissions: UpdateAutoScalingGroup with a launch template requires
  # ec2:RunInstances on what the template launches, ec2:CreateTags for its
  # tag specifications and iam:PassRole for its instance profile (AWS
  # documents these as the dependent actions of the call). Kept out of the
  # lists above, which mirror the SDK calls.
  coordinator_dependent_actions = [
    "ec2:RunInstances",
    "ec2:CreateTags",
    "iam:PassRole",
  ]

  web_launch_template_arn = aws_launch_template.web.arn
  web_asg_arn_pattern     = "arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.web_asg_name}"
}

resource "aws_iam_role" "coordinator" {
  name               = "${local.name}-coordinator"
  description        = "rollgate coordinator: rolls new AMIs out to the web Auto Scaling group"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "coordinator" {
  name = "${local.name}-coordinator"
  role = aws_iam_role.coordinator.name
}

data "aws_iam_policy_document" "coordinator" {
  # Describe calls support no resource-level permissions in EC2 or Auto
  # Scaling: they can only be granted on "*". They also serve the Consul
  # agent's cloud auto-join on the coordinator nodes.
  statement {
    sid       = "Describe"
    actions   = concat(local.coordinator_ec2_read_actions, local.coordinator_autoscaling_read_actions)
    resources = ["*"]
  }

  # Marking images (e.g. a version that failed, so it is never rolled forward
  # again): only images of our artifact, only tags under rollgate:.
  statement {
    sid       = "TagArtifactImages"
    actions   = local.coordinator_ec2_image_tag_actions
    resources = ["arn:${local.partition}:ec2:${var.region}::image/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/rollgate:artifact"
      values   = [var.artifact]
    }

    condition {
      test     = "ForAllValues:StringLike"
      variable = "aws:TagKeys"
      values   = ["rollgate:*"]
    }
  }

  # New versions of the web launch template only.
  statement {
    sid       = "VersionWebLaunchTemplate"
    actions   = local.coordinator_ec2_template_actions
    resources = [local.web_launch_template_arn]
  }

  # Changes to the web group only: by name and by the rollgate:managed tag,
  # which the coordinator cannot set itself (it has no tagging permission on
  # Auto Scaling groups).
  statement {
    sid       = "ManageWebGroup"
    actions   = local.coordinator_autoscaling_write_actions
    resources = [local.web_asg_arn_pattern]

    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/rollgate:managed"
      values   = ["true"]
    }
  }

  # Dependent actions (see coordinator_dependent_actions): what AWS checks
  # when UpdateAutoScalingGroup points the group at a template version. Only
  # launches from the web launch template, only tags created by that launch,
  # only the web node role handed to EC2.
  statement {
    sid       = "LaunchFromWebTemplate"
    actions   = [for a in local.coordinator_dependent_actions : a if a == "ec2:RunInstances"]
    resources = ["*"]

    condition {
      test     = "ArnEquals"
      variable = "ec2:LaunchTemplate"
      values   = [local.web_launch_template_arn]
    }
  }

  statement {
    sid       = "TagOnLaunch"
    actions   = [for a in local.coordinator_dependent_actions : a if a == "ec2:CreateTags"]
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:*/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
  }

  statement {
    sid       = "PassWebNodeRole"
    actions   = [for a in local.coordinator_dependent_actions : a if a == "iam:PassRole"]
    resources = [aws_iam_role.node.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadOwnSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns_by_reader["coordinator"]
  }
}

resource "aws_iam_role_policy" "coordinator" {
  name   = "coordinator"
  role   = aws_iam_role.coordinator.id
  policy = data.aws_iam_policy_document.coordinator.json

  lifecycle {
    precondition {
      condition     = length(local.coordinator_unscoped_actions) == 0
      error_message = "iam.tf: these coordinator actions belong to no scoped statement and would not be granted: ${join(", ", local.coordinator_unscoped_actions)}. Add them to a statement with the narrowest resources AWS supports."
    }
  }
}
