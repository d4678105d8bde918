# The whole stack planned and "applied" against mock AWS providers (no
# account, no network; the provider's schema comes from the local mirror).
# Asserts who owns each launch-template and group field, that an apply
# during a rollout is refused, and the conditions of the IAM policies.
#
#   terraform -chdir=infra test      (run by .ci/iac-check)

mock_provider "aws" {
  mock_data "aws_ami" {
    defaults = {
      id = "ami-0aaaaaaaaaaaaaaa1"
      tags = {
        "rollgate:artifact"          = "acmeinc/web"
        "rollgate:consul-datacenter" = "dc1"
        "rollgate:consul-join"       = "consul-cluster=rollgate"
      }
    }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"] }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  # No web group yet: a first apply.
  mock_data "aws_autoscaling_groups" {
    defaults = { names = [] }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock", unique_id = "AROAMOCKROLEID" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/mock" }
  }
  mock_resource "aws_lb" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mock/0123456789abcdef" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mock/0123456789abcdef" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", arn = "arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0123456789abcdef0", default_version = 1, latest_version = 1 }
  }
}

variables {
  region                 = "eu-west-1"
  environment            = "prod"
  node_image_id          = "ami-0bbbbbbbbbbbbbbb2"
  consul_ca_cert_pem     = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n"
  consul_server_cert_pem = "-----BEGIN CERTIFICATE-----\nMIIBserver\n-----END CERTIFICATE-----\n"
  slack_channel          = "#ops"
  smtp_host              = "smtp.example.com"
  smtp_username          = "rollgate"
  email_from             = "rollgate@example.com"
  email_to               = ["ops@example.com"]
  # Stand-ins for config/acl (tests/fixtures/acl/README.md).
  consul_acl_policy_dir = "tests/fixtures/acl"
}

run "first_apply" {
  assert {
    condition     = aws_launch_template.web.image_id == "ami-0aaaaaaaaaaaaaaa1"
    error_message = "The first web template version must launch the newest image of the artifact."
  }
  assert {
    condition     = aws_launch_template.web.update_default_version == true
    error_message = "Terraform must make each web template version it writes the default version: the coordinator copies the default."
  }
  assert {
    condition     = aws_autoscaling_group.web.launch_template[0].version == tostring(aws_launch_template.web.default_version)
    error_message = "The group must start pinned to an explicit version (the default Terraform wrote), never $Latest or $Default."
  }
  assert {
    condition     = aws_launch_template.consul_server.image_id == var.node_image_id && aws_launch_template.coordinator.image_id == var.node_image_id
    error_message = "Consul servers and coordinators must boot from var.node_image_id."
  }
  assert {
    condition     = aws_lb_target_group.web.health_check[0].path == "/ready" && aws_lb_target_group.web.health_check[0].port == "9102"
    error_message = "The ALB must ask the rollgate agent's /ready (the Consul verdict), not the app."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.web_ready_from_alb.from_port == 9102 && aws_vpc_security_group_ingress_rule.web_ready_from_alb.referenced_security_group_id == aws_security_group.alb.id
    error_message = "The web nodes must admit the readiness port from the ALB only."
  }
}

# A newer image and a new desired capacity: Terraform changes neither. The
# image and the desired capacity are the coordinator's.
run "new_image_is_the_coordinators" {
  command = plan

  override_data {
    target = data.aws_ami.web
    values = {
      id = "ami-0ccccccccccccccc3"
      tags = {
        "rollgate:artifact"          = "acmeinc/web"
        "rollgate:consul-datacenter" = "dc1"
        "rollgate:consul-join"       = "consul-cluster=rollgate"
      }
    }
  }

  variables {
    web_desired_capacity = 3
  }

  assert {
    condition     = aws_launch_template.web.image_id == "ami-0aaaaaaaaaaaaaaa1"
    error_message = "A newer image must not reach the web template through Terraform (ignore_changes = [image_id]): the coordinator rolls it out."
  }
  assert {
    condition     = aws_autoscaling_group.web.desired_capacity == 2
    error_message = "Terraform must not move the desired capacity after creation: the coordinator surges it during rollouts."
  }
}

# A Terraform-owned field of the template still changes through Terraform
# (as a new default version the coordinator will roll out).
run "terraform_owns_the_rest_of_the_template" {
  command = plan

  variables {
    web_instance_type = "t3.medium"
  }

  assert {
    condition     = aws_launch_template.web.instance_type == "t3.medium"
    error_message = "The instance type is Terraform's: a change must reach the template."
  }
}

run "apply_refused_while_processes_are_suspended" {
  command = plan

  override_data {
    target = data.aws_autoscaling_groups.web_existing
    values = { names = ["rollgate-prod-web"] }
  }
  override_data {
    target = data.aws_autoscaling_group.web_live[0]
    values = { suspended_processes = ["AZRebalance", "ScheduledActions"], max_size = 6 }
  }

  expect_failures = [aws_autoscaling_group.web]
}

run "apply_refused_with_one_rollout_process_suspended" {
  command = plan

  override_data {
    target = data.aws_autoscaling_groups.web_existing
    values = { names = ["rollgate-prod-web"] }
  }
  override_data {
    target = data.aws_autoscaling_group.web_live[0]
    values = { suspended_processes = ["AlarmNotification"], max_size = 7 }
  }

  expect_failures = [aws_autoscaling_group.web]
}

# Lowering max_size between rollouts is Terraform's to do.
run "lowering_max_size_between_rollouts_is_allowed" {
  command = plan

  override_data {
    target = data.aws_autoscaling_groups.web_existing
    values = { names = ["rollgate-prod-web"] }
  }
  override_data {
    target = data.aws_autoscaling_group.web_live[0]
    values = { suspended_processes = [], max_size = 6 }
  }

  variables {
    web_max_size = 4
  }

  assert {
    condition     = aws_autoscaling_group.web.max_size == 4
    error_message = "max_size is Terraform's: between rollouts a change must be planned."
  }
}

run "apply_allowed_between_rollouts" {
  command = plan

  override_data {
    target = data.aws_autoscaling_groups.web_existing
    values = { names = ["rollgate-prod-web"] }
  }
  override_data {
    target = data.aws_autoscaling_group.web_live[0]
    values = { suspended_processes = ["Launch"], max_size = 6 }
  }

  assert {
    condition     = !local.web_rollout_in_progress
    error_message = "A group with no rollout processes suspended and max_size as configured is not mid-rollout."
  }
}

run "coordinator_iam_conditions" {
  variables {
    artifact = "acmeinc/web"
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement :
      s.Resource != "*" && try(s.Condition.ArnEquals["ec2:LaunchTemplate"], "") == aws_launch_template.web.arn
      if contains(flatten([s.Action]), "ec2:RunInstances")
    ])
    error_message = "Every ec2:RunInstances statement must be limited to launches from the web launch template, and none may be on \"*\"."
  }
  assert {
    condition = length([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement : s
      if contains(flatten([s.Action]), "ec2:RunInstances") && s.Sid == "RunArtifactImages"
      && s.Resource == "arn:aws:ec2:eu-west-1::image/*"
      && try(s.Condition.StringEquals["ec2:ResourceTag/rollgate:artifact"], null) == "acmeinc/web"
      && try(s.Condition.StringEquals["ec2:Owner"], null) == "123456789012"
    ]) == 1
    error_message = "Images may be launched only when tagged rollgate:artifact = the artifact and owned by this account (no public AMIs)."
  }
  assert {
    condition = length([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement : s
      if s.Sid == "RunInStackSubnets"
      && try(toset(s.Resource), toset([])) == toset([for n in aws_subnet.private : "arn:aws:ec2:eu-west-1:123456789012:subnet/${n.id}"])
    ]) == 1
    error_message = "Launches may use the stack's private subnets only."
  }
  assert {
    condition = length([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement : s
      if s.Sid == "RunWithStackSecurityGroups"
      && try(toset(s.Resource), toset([])) == toset([for g in [aws_security_group.web.id, aws_security_group.consul.id, aws_security_group.node_egress.id] : "arn:aws:ec2:eu-west-1:123456789012:security-group/${g}"])
    ]) == 1
    error_message = "Launches may use the web nodes' security groups only."
  }
  assert {
    condition = length([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement : s
      if s.Sid == "RunFromWebTemplate" && s.Resource == aws_launch_template.web.arn
    ]) == 1
    error_message = "The only launch template a launch may use is the web one."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement :
      s.Resource == aws_launch_template.web.arn
      if contains(flatten([s.Action]), "ec2:CreateLaunchTemplateVersion")
    ])
    error_message = "The coordinator may version the web launch template only."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement :
      s.Resource == aws_iam_role.node.arn && try(s.Condition.StringEquals["iam:PassedToService"], null) == "ec2.amazonaws.com"
      if contains(flatten([s.Action]), "iam:PassRole")
    ])
    error_message = "The coordinator may pass the web node role to EC2 only."
  }
  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.coordinator.policy).Statement :
      try(s.Condition.StringEquals["autoscaling:ResourceTag/rollgate:managed"], null) == "true"
      if anytrue([for a in flatten([s.Action]) : startswith(a, "autoscaling:") && !startswith(a, "autoscaling:Describe")])
    ])
    error_message = "Auto Scaling writes must require the rollgate:managed tag."
  }
}

run "node_tokens_are_per_instance" {
  assert {
    condition = length([
      for s in jsondecode(aws_iam_role_policy.node.policy).Statement : s
      if s.Sid == "ReadOwnNodeToken" && try(s.Condition.StringEquals["secretsmanager:ResourceTag/rollgate:reader"], null) == "$${aws:userid}"
    ]) == 1
    error_message = "A web node may read only the node token tagged with its own role session (aws:userid = role id:instance id)."
  }
  assert {
    condition     = !strcontains(aws_iam_role_policy.node.policy, "consul-web-token")
    error_message = "No Consul token shared by every web node may exist."
  }
  assert {
    condition = alltrue([
      for vars in [local.web_user_data_vars, local.coordinator_user_data_vars] : length([
        for e in jsondecode(vars.node_secrets_json).secrets : e
        if e.path == "/etc/consul.d/acl-token.hcl" && e.format == "consul-node-token" && e.secret_id == "${local.node_token_secret_prefix}{instance_id}"
      ]) == 1
    ])
    error_message = "Web nodes and coordinators must give their Consul agent their own per-instance token (node-secrets format consul-node-token)."
  }
  assert {
    condition = alltrue([
      for g in local.consul_acl_config.node_tokens.groups : g.reader_role_id == aws_iam_role.node.unique_id || g.reader_role_id == aws_iam_role.coordinator.unique_id
    ]) && local.consul_acl_config.node_tokens.groups[0].service_identities == ["web"]
    error_message = "The ACL bootstrap must mint web node tokens with the service identity web, readable by the web role's instance sessions."
  }
}

run "acl_policies_come_from_the_policy_files" {
  command = plan

  assert {
    condition     = keys(local.consul_acl_config.policies) == ["agent", "coordinator"] && strcontains(local.consul_acl_config.policies.agent, "fixture")
    error_message = "Every <role>.hcl of the policy directory must reach the Consul servers' ACL bootstrap, under its role name."
  }
}

run "missing_acl_policy_files_are_named" {
  command = plan

  variables {
    consul_acl_policy_dir = "tests/fixtures/no-such-dir"
  }

  expect_failures = [check.consul_acl_policies]
}
