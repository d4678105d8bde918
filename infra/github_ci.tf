# The image pipeline's access to AWS (.github/workflows/image.yml): GitHub's
# OIDC provider and one role that only the workflow runs of one repository
# and branch can assume, without stored keys. Everything here is created only
# when github_repository is set.
#
# The role may do what Packer's amazon-ebs builder does for images/web.pkr.hcl
# and what `rollgate publish` does, no more:
#
#   reads        Describe calls (no resource-level permissions exist for them)
#   build        its own temporary instance, key pair (packer_*) and security
#                group, recognised by the tag rollgate:building = var.artifact
#                that the template's run_tags put on everything Packer creates;
#                instances only from Canonical's images and of the allowed types
#   images       create, encrypt-copy, modify and tag images of the artifact;
#                deregister and delete only images and snapshots carrying
#                that build tag (Packer's unencrypted intermediate image)
#
# agent/tests/ci_workflow.rs checks the action lists below against what the
# template makes Packer call and what the publish code calls.

variable "github_repository" {
  type        = string
  description = "GitHub repository (owner/name) whose image workflow may assume the CI role. Empty: no OIDC provider, no CI role."
  default     = ""

  validation {
    condition     = var.github_repository == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "The github_repository must be empty or owner/name of a GitHub repository, e.g. acmeinc/rollgate (no wildcards)."
  }
}

variable "github_branch" {
  type        = string
  description = "The branch (the repository's default branch) whose workflow runs may assume the CI role; runs on any other ref are refused by the trust policy."
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.github_branch)) && !startswith(var.github_branch, "refs/") && !endswith(var.github_branch, "/")
    error_message = "The github_branch must be a branch name such as main (no refs/heads/ prefix, no wildcards)."
  }
}

variable "github_oidc_provider_arn" {
  type        = string
  description = "ARN of an existing IAM OIDC provider for GitHub Actions (an account holds one per URL); empty: this stack creates it."
  default     = ""

  validation {
    condition     = var.github_oidc_provider_arn == "" || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", var.github_oidc_provider_arn))
    error_message = "The github_oidc_provider_arn must be empty or the ARN of the token.actions.githubusercontent.com OIDC provider."
  }
}

variable "ci_build_instance_types" {
  type        = list(string)
  description = "Instance types the CI role may launch as Packer's temporary build instance (the template's instance_type)."
  default     = ["t3.small", "t4g.small"]

  validation {
    condition     = length(var.ci_build_instance_types) > 0 && alltrue([for t in var.ci_build_instance_types : can(regex("^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "The ci_build_instance_types must list at least one EC2 instance type such as t3.small, without wildcards."
  }
}

# ===== BEGIN github ci allowed actions ======================================
# What the workflow's steps call in AWS, and nothing else. Plain string
# literals only: agent/tests/ci_workflow.rs parses this block and compares it
# with the calls of Packer's amazon-ebs builder for images/web.pkr.hcl and of
# `rollgate publish` (agent/src/aws/registry).
locals {
  github_ci_packer_ec2_actions = [
    "ec2:DescribeRegions",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "ec2:DescribeVolumes",
    "ec2:CreateKeyPair",
    "ec2:DeleteKeyPair",
    "ec2:CreateSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:DeleteSecurityGroup",
    "ec2:RunInstances",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
    "ec2:CreateImage",
    "ec2:CopyImage",
    "ec2:ModifyImageAttribute",
    "ec2:DeregisterImage",
    "ec2:DeleteSnapshot",
    "ec2:CreateTags",
  ]

  # `rollgate publish` reads the group, its launch template and its
  # instances as the coordinator's planner does (to say what the
  # coordinator will do with the image) before it tags the image.
  github_ci_publish_actions = [
    "autoscaling:DescribeAutoScalingGroups",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:CreateTags",
  ]
}
# ===== END github ci allowed actions ========================================

locals {
  github_ci_enabled = var.github_repository != ""

  github_oidc_url             = "token.actions.githubusercontent.com"
  github_oidc_provider_arn    = var.github_oidc_provider_arn != "" ? var.github_oidc_provider_arn : one(aws_iam_openid_connect_provider.github[*].arn)
  github_ci_build_tag         = "rollgate:building" # images/web.pkr.hcl run_tags
  github_ci_canonical_account = "099720109477"      # images/web.pkr.hcl source_ami_filter owners

  github_ci_ec2   = "arn:${local.partition}:ec2:${var.region}:${local.account_id}"
  github_ci_image = "arn:${local.partition}:ec2:${var.region}::image/*"
  github_ci_snap  = "arn:${local.partition}:ec2:${var.region}::snapshot/*"

  github_ci_actions = distinct(concat(local.github_ci_packer_ec2_actions, local.github_ci_publish_actions))

  # How each action is scoped; every action must fall in at least one group
  # (the precondition on the policy fails the plan otherwise).
  # Describe calls support no resource-level permissions (EC2, Auto Scaling).
  github_ci_read_actions    = [for a in local.github_ci_actions : a if startswith(a, "ec2:Describe") || startswith(a, "autoscaling:Describe")]
  github_ci_keypair_actions = [for a in local.github_ci_actions : a if contains(["ec2:CreateKeyPair", "ec2:DeleteKeyPair"], a)]
  github_ci_own_actions = [for a in local.github_ci_actions : a if contains([
    "ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteSecurityGroup", "ec2:StopInstances", "ec2:TerminateInstances",
    "ec2:CreateImage", "ec2:ModifyImageAttribute", "ec2:DeregisterImage", "ec2:DeleteSnapshot",
  ], a)]
  github_ci_scoped_actions = concat(
    local.github_ci_read_actions,
    local.github_ci_keypair_actions,
    local.github_ci_own_actions,
    ["ec2:RunInstances", "ec2:CreateSecurityGroup", "ec2:CopyImage", "ec2:CreateTags"],
  )
  github_ci_unscoped_actions = setsubtract(local.github_ci_actions, local.github_ci_scoped_actions)
}

resource "aws_iam_openid_connect_provider" "github" {
  count = local.github_ci_enabled && var.github_oidc_provider_arn == "" ? 1 : 0

  url            = "https://${local.github_oidc_url}"
  client_id_list = ["sts.amazonaws.com"]
  # AWS validates GitHub's tokens through its own trust store; the list is
  # kept for API versions that still require one (GitHub's published
  # intermediate certificate thumbprints).
  thumbprint_list = [
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
  ]
}

data "aws_iam_policy_document" "github_ci_trust" {
  count = local.github_ci_enabled ? 1 : 0

  statement {
    sid     = "GitHubWorkflowOfOneBranch"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:aud"
      values   = ["sts.amazonaws.com"]
    }

    # Exact match, no wildcard: pushes to and dispatches on this branch of
    # this repository only (not pull requests, other branches, tags or forks).
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:sub"
      values   = ["repo:${var.github_repository}:ref:refs/heads/${var.github_branch}"]
    }
  }
}

resource "aws_iam_role" "github_ci" {
  count = local.github_ci_enabled ? 1 : 0

  name                 = "${local.name}-github-ci"
  description          = "rollgate image workflow of ${var.github_repository} (${var.github_branch}): Packer amazon-ebs builds of ${var.artifact} and rollgate publish"
  assume_role_policy   = data.aws_iam_policy_document.github_ci_trust[0].json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "github_ci" {
  count = local.github_ci_enabled ? 1 : 0

  # Describe calls support no resource-level permissions.
  statement {
    sid       = "Describe"
    actions   = local.github_ci_read_actions
    resources = ["*"]
  }

  # Packer's temporary key pair is named packer_<uuid>.
  statement {
    sid       = "TemporaryKeyPair"
    actions   = local.github_ci_keypair_actions
    resources = ["${local.github_ci_ec2}:key-pair/packer_*"]
  }

  # The temporary security group must be created with the build tag
  # (Packer tags it with run_tags).
  statement {
    sid       = "CreateTemporarySecurityGroup"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["${local.github_ci_ec2}:security-group/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${local.github_ci_build_tag}"
      values   = [var.artifact]
    }
  }

  statement {
    sid       = "CreateTemporarySecurityGroupInVpc"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["${local.github_ci_ec2}:vpc/*"]
  }

  # The build instance: tagged as a build of the artifact at launch, of an
  # allowed type, from one of Canonical's images.
  statement {
    sid       = "LaunchBuildInstance"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.github_ci_ec2}:instance/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${local.github_ci_build_tag}"
      values   = [var.artifact]
    }

    condition {
      test     = "StringEquals"
      variable = "ec2:InstanceType"
      values   = var.ci_build_instance_types
    }
  }

  statement {
    sid     = "LaunchBuildInstanceResources"
    actions = ["ec2:RunInstances"]
    resources = [
      "${local.github_ci_ec2}:volume/*",
      "${local.github_ci_ec2}:network-interface/*",
      "${local.github_ci_ec2}:security-group/*",
      "${local.github_ci_ec2}:subnet/*",
      "${local.github_ci_ec2}:key-pair/packer_*",
    ]
  }

  statement {
    sid       = "LaunchFromCanonicalImages"
    actions   = ["ec2:RunInstances"]
    resources = [local.github_ci_image]

    condition {
      test     = "StringEquals"
      variable = "ec2:Owner"
      values   = [local.github_ci_canonical_account]
    }
  }

  # Everything else Packer does to what it created: only resources that carry
  # the build tag of this artifact.
  statement {
    sid     = "OwnBuildResources"
    actions = local.github_ci_own_actions
    resources = [
      "${local.github_ci_ec2}:instance/*",
      "${local.github_ci_ec2}:security-group/*",
      local.github_ci_image,
      local.github_ci_snap,
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/${local.github_ci_build_tag}"
      values   = [var.artifact]
    }
  }

  # The image and snapshot CreateImage makes carry the run tags from birth.
  statement {
    sid       = "CreateImageOfBuild"
    actions   = [for a in local.github_ci_own_actions : a if a == "ec2:CreateImage"]
    resources = [local.github_ci_image, local.github_ci_snap]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/${local.github_ci_build_tag}"
      values   = [var.artifact]
    }
  }

  # encrypt_boot: the intermediate image is copied, encrypted, within the
  # region (the copy keeps its tags).
  statement {
    sid       = "EncryptedCopyInRegion"
    actions   = ["ec2:CopyImage"]
    resources = [local.github_ci_image, local.github_ci_snap]
  }

  # Tags set by the creating call itself (TagSpecifications, CopyImageTags).
  statement {
    sid     = "TagOnCreate"
    actions = ["ec2:CreateTags"]
    resources = [
      "${local.github_ci_ec2}:instance/*",
      "${local.github_ci_ec2}:volume/*",
      "${local.github_ci_ec2}:security-group/*",
      "${local.github_ci_ec2}:key-pair/packer_*",
      local.github_ci_image,
      local.github_ci_snap,
    ]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances", "CreateSecurityGroup", "CreateKeyPair", "CreateImage", "CopyImage"]
    }
  }

  # The image's tags (Packer's tags/snapshot_tags, rollgate publish): only
  # Name and rollgate:* keys, only as this artifact, never on an image of
  # another artifact or another pipeline's build.
  statement {
    sid       = "TagArtifactImages"
    actions   = ["ec2:CreateTags"]
    resources = [local.github_ci_image, local.github_ci_snap]

    condition {
      test     = "ForAllValues:StringLike"
      variable = "aws:TagKeys"
      values   = ["Name", "rollgate:*"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/rollgate:artifact"
      values   = [var.artifact]
    }

    condition {
      test     = "StringEqualsIfExists"
      variable = "ec2:ResourceTag/rollgate:artifact"
      values   = [var.artifact]
    }

    condition {
      test     = "StringEqualsIfExists"
      variable = "ec2:ResourceTag/${local.github_ci_build_tag}"
      values   = [var.artifact]
    }
  }
}

resource "aws_iam_role_policy" "github_ci" {
  count = local.github_ci_enabled ? 1 : 0

  name   = "image-pipeline"
  role   = aws_iam_role.github_ci[0].id
  policy = data.aws_iam_policy_document.github_ci[0].json

  lifecycle {
    precondition {
      condition     = length(local.github_ci_unscoped_actions) == 0
      error_message = "github_ci.tf: these actions belong to no scoped statement and would not be granted: ${join(", ", local.github_ci_unscoped_actions)}. Add them to a statement with the narrowest resources AWS supports."
    }
  }
}

output "github_ci_role_arn" {
  description = "Role of the image workflow: set it as the repository variable ROLLGATE_CI_ROLE_ARN (null when github_repository is empty)."
  value       = one(aws_iam_role.github_ci[*].arn)
}

output "github_oidc_provider_arn" {
  description = "The GitHub Actions OIDC provider the CI role trusts (null when github_repository is empty)."
  value       = local.github_ci_enabled ? local.github_oidc_provider_arn : null
}
