# Instance roles, least privilege. Every policy is a plain object encoded
# with jsonencode (no aws_iam_policy_document), so `terraform test` can read
# its statements back and assert each condition (tests/iam.tftest.hcl).
#
#   web node       ec2:DescribeInstances (Consul cloud auto-join) + read of
#                  its own secrets and of its own per-instance Consul token
#                  (tagged with the role id and instance id it is for).
#   Consul server  auto-join, its secrets, and what the ACL bootstrap needs:
#                  write the coordinator's role token and the per-instance
#                  node tokens into Secrets Manager.
#   coordinator    exactly the EC2 and Auto Scaling calls rollgate makes, each
#                  scoped as tightly as AWS allows, + the actions AWS checks
#                  on its behalf when it updates the group (RunInstances only
#                  from the web template, with artifact images, the stack's
#                  subnets and security groups), + its secrets.

locals {
  ec2_assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "Ec2AssumeRole"
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ec2.amazonaws.com" }
    }]
  })

  # Per-instance Consul tokens (consul-acl.tf) are secrets named
  # <prefix><instance id>, tagged rollgate:reader = <role id>:<instance id>:
  # the value of aws:userid for that instance's role session, so each
  # instance can read its own token and no other.
  node_token_secret_arn_pattern = "arn:${local.partition}:secretsmanager:${var.region}:${local.account_id}:secret:${local.node_token_secret_prefix}*"

  read_own_node_token = {
    Sid      = "ReadOwnNodeToken"
    Effect   = "Allow"
    Action   = "secretsmanager:GetSecretValue"
    Resource = local.node_token_secret_arn_pattern
    Condition = {
      StringEquals = { "secretsmanager:ResourceTag/rollgate:reader" = "$${aws:userid}" }
    }
  }
}

# ---------------------------------------------------------------------------
# Web nodes
# ---------------------------------------------------------------------------

resource "aws_iam_role" "node" {
  name               = "${local.name}-web-node"
  description        = "rollgate web nodes: Consul auto-join, their own secrets and node token"
  assume_role_policy = local.ec2_assume_role_policy
}

resource "aws_iam_instance_profile" "node" {
  name = "${local.name}-web-node"
  role = aws_iam_role.node.name
}

locals {
  node_policy = {
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid      = "ConsulCloudAutoJoin"
          Effect   = "Allow"
          Action   = "ec2:DescribeInstances"
          Resource = "*" # Describe calls support no resource-level permissions.
        },
        local.read_own_node_token,
      ],
      length(local.secret_arns_by_reader["web"]) == 0 ? [] : [{
        Sid      = "ReadOwnSecrets"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = local.secret_arns_by_reader["web"]
      }],
    )
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "web-node"
  role   = aws_iam_role.node.id
  policy = jsonencode(local.node_policy)
}

# ---------------------------------------------------------------------------
# Consul servers
# ---------------------------------------------------------------------------

resource "aws_iam_role" "consul_server" {
  name               = "${local.name}-consul-server"
  description        = "rollgate Consul servers: auto-join, their secrets, the ACL bootstrap's tokens"
  assume_role_policy = local.ec2_assume_role_policy
}

resource "aws_iam_instance_profile" "consul_server" {
  name = "${local.name}-consul-server"
  role = aws_iam_role.consul_server.name
}

locals {
  consul_server_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        # Auto-join, and the ACL bootstrap's list of web and coordinator
        # instances (it mints one token per instance).
        Sid      = "DescribeInstances"
        Effect   = "Allow"
        Action   = "ec2:DescribeInstances"
        Resource = "*"
      },
      {
        Sid      = "ReadOwnSecrets"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = local.secret_arns_by_reader["consul_server"]
      },
      {
        # The bootstrap creates the coordinator's role token and stores its
        # secret id in the (empty) container Terraform made.
        Sid      = "StoreRoleTokens"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
        Resource = local.secret_arns_by_writer["consul_server"]
      },
      {
        # One secret per web or coordinator instance, under the node-token
        # prefix only, always tagged with the instance it is for.
        Sid    = "StoreNodeTokens"
        Effect = "Allow"
        Action = [
          "secretsmanager:CreateSecret",
          "secretsmanager:TagResource",
          "secretsmanager:PutSecretValue",
          "secretsmanager:GetSecretValue",
          "secretsmanager:DescribeSecret",
          "secretsmanager:DeleteSecret",
        ]
        Resource = local.node_token_secret_arn_pattern
      },
    ]
  }
}

resource "aws_iam_role_policy" "consul_server" {
  name   = "consul-server"
  role   = aws_iam_role.consul_server.id
  policy = jsonencode(local.consul_server_policy)
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

  ec2_arn_prefix = "arn:${local.partition}:ec2:${var.region}:${local.account_id}"

  # What a launch may use. The coordinator writes the image of every version
  # it creates, so the image is pinned by tag (and owner) here rather than
  # trusted from the template; everything else Terraform wrote into the
  # template, and the template itself, is pinned by ARN.
  web_launch_subnet_arns         = [for s in aws_subnet.private : "${local.ec2_arn_prefix}:subnet/${s.id}"]
  web_launch_security_group_arns = [for g in local.web_security_group_ids : "${local.ec2_arn_prefix}:security-group/${g}"]

  # Every RunInstances statement also requires the web launch template.
  from_web_template = { ArnEquals = { "ec2:LaunchTemplate" = local.web_launch_template_arn } }

  coordinator_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        # Describe calls support no resource-level permissions in EC2 or
        # Auto Scaling: they can only be granted on "*". They also serve
        # the Consul agent's cloud auto-join on the coordinator nodes.
        Sid      = "Describe"
        Effect   = "Allow"
        Action   = concat(local.coordinator_ec2_read_actions, local.coordinator_autoscaling_read_actions)
        Resource = "*"
      },
      {
        # Marking images (e.g. a version that failed, so it is never rolled
        # forward again): only images of our artifact, only rollgate: tags.
        Sid      = "TagArtifactImages"
        Effect   = "Allow"
        Action   = local.coordinator_ec2_image_tag_actions
        Resource = "arn:${local.partition}:ec2:${var.region}::image/*"
        Condition = {
          StringEquals              = { "ec2:ResourceTag/rollgate:artifact" = var.artifact }
          "ForAllValues:StringLike" = { "aws:TagKeys" = ["rollgate:*"] }
        }
      },
      {
        # New versions of the web launch template only.
        Sid      = "VersionWebLaunchTemplate"
        Effect   = "Allow"
        Action   = local.coordinator_ec2_template_actions
        Resource = local.web_launch_template_arn
      },
      {
        # Changes to the web group only: by name and by the rollgate:managed
        # tag, which the coordinator cannot set itself (it has no tagging
        # permission on Auto Scaling groups).
        Sid       = "ManageWebGroup"
        Effect    = "Allow"
        Action    = local.coordinator_autoscaling_write_actions
        Resource  = local.web_asg_arn_pattern
        Condition = { StringEquals = { "autoscaling:ResourceTag/rollgate:managed" = "true" } }
      },
      # Dependent actions (coordinator_dependent_actions): what AWS checks
      # when UpdateAutoScalingGroup points the group at a template version.
      # RunInstances is authorised per resource it touches; each kind gets
      # its own statement so no kind is open on "*".
      {
        Sid       = "RunFromWebTemplate"
        Effect    = "Allow"
        Action    = "ec2:RunInstances"
        Resource  = local.web_launch_template_arn
        Condition = local.from_web_template
      },
      {
        # Only images built by images/ in this account for this artifact:
        # not a public AMI, not another artifact's image.
        Sid      = "RunArtifactImages"
        Effect   = "Allow"
        Action   = "ec2:RunInstances"
        Resource = "arn:${local.partition}:ec2:${var.region}::image/*"
        Condition = merge(local.from_web_template, {
          StringEquals = {
            "ec2:ResourceTag/rollgate:artifact" = var.artifact
            "ec2:Owner"                         = local.account_id
          }
        })
      },
      {
        Sid       = "RunInStackSubnets"
        Effect    = "Allow"
        Action    = "ec2:RunInstances"
        Resource  = local.web_launch_subnet_arns
        Condition = local.from_web_template
      },
      {
        Sid       = "RunWithStackSecurityGroups"
        Effect    = "Allow"
        Action    = "ec2:RunInstances"
        Resource  = local.web_launch_security_group_arns
        Condition = local.from_web_template
      },
      {
        # What the launch creates.
        Sid    = "RunCreatesInstancesVolumesInterfaces"
        Effect = "Allow"
        Action = "ec2:RunInstances"
        Resource = [
          "${local.ec2_arn_prefix}:instance/*",
          "${local.ec2_arn_prefix}:volume/*",
          "${local.ec2_arn_prefix}:network-interface/*",
        ]
        Condition = local.from_web_template
      },
      {
        # Only tags created by that launch.
        Sid       = "TagOnLaunch"
        Effect    = "Allow"
        Action    = "ec2:CreateTags"
        Resource  = "${local.ec2_arn_prefix}:*/*"
        Condition = { StringEquals = { "ec2:CreateAction" = "RunInstances" } }
      },
      {
        # Only the web node role handed to EC2.
        Sid       = "PassWebNodeRole"
        Effect    = "Allow"
        Action    = "iam:PassRole"
        Resource  = aws_iam_role.node.arn
        Condition = { StringEquals = { "iam:PassedToService" = "ec2.amazonaws.com" } }
      },
      {
        Sid      = "ReadOwnSecrets"
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = local.secret_arns_by_reader["coordinator"]
      },
      local.read_own_node_token,
    ]
  }

  # Every dependent action appears in a statement of its own kind above.
  coordinator_dependent_granted = distinct(flatten([
    for s in local.coordinator_policy.Statement : s.Action if !contains(["Describe", "TagArtifactImages", "VersionWebLaunchTemplate", "ManageWebGroup"], s.Sid)
  ]))
}

resource "aws_iam_role" "coordinator" {
  name               = "${local.name}-coordinator"
  description        = "rollgate coordinator: rolls new AMIs out to the web Auto Scaling group"
  assume_role_policy = local.ec2_assume_role_policy
}

resource "aws_iam_instance_profile" "coordinator" {
  name = "${local.name}-coordinator"
  role = aws_iam_role.coordinator.name
}

resource "aws_iam_role_policy" "coordinator" {
  name   = "coordinator"
  role   = aws_iam_role.coordinator.id
  policy = jsonencode(local.coordinator_policy)

  lifecycle {
    precondition {
      condition     = length(local.coordinator_unscoped_actions) == 0
      error_message = "iam.tf: these coordinator actions belong to no scoped statement and would not be granted: ${join(", ", local.coordinator_unscoped_actions)}. Add them to a statement with the narrowest resources AWS supports."
    }
    precondition {
      condition     = length(setsubtract(local.coordinator_dependent_actions, local.coordinator_dependent_granted)) == 0
      error_message = "iam.tf: a dependent action of UpdateAutoScalingGroup is listed but granted by no statement: ${join(", ", setsubtract(local.coordinator_dependent_actions, local.coordinator_dependent_granted))}."
    }
  }
}
