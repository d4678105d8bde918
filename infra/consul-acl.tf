# Consul ACLs, set up inside the stack with no human on a server.
#
# Terraform cannot do this itself: the Consul HTTP API listens on loopback
# only and the stack has no bastion, SSH or SSM path to it (and the Consul
# provider is not among the providers CI can install). So the Consul servers
# do it. Every server runs rollgate-consul-acl (puppet/modules/consul_acl)
# at boot and then every minute, with the configuration below and the
# initial management token from Secrets Manager. Each run converges, so
# running it on every server at once, or again after a crash, is safe:
#
# * one policy per file config/acl/<role>.hcl, named rollgate-<role> (the
#   roles of rollgate: agent, coordinator, watcher, operator, ci), and one
#   ACL role of the same name holding it; a changed file updates the policy
#   when a server boots with the new user data;
# * the coordinator's token (role rollgate-coordinator); its secret id is
#   generated once and stored in the consul-coordinator-token secret;
# * one token per web and coordinator instance, with the node identity of
#   that instance (Consul node name = instance id) and, on web nodes, the
#   service identity `web` and the role rollgate-agent: a node can write its
#   own node's checks and no other's. The token goes to a per-instance
#   secret that only that instance's role session can read (iam.tf); it is
#   deleted with the instance;
# * the local server's own agent token (node identity of the server).
#
# Policies for operators and CI are roles too (rollgate-operator,
# rollgate-ci): tokens for people are created from them by whoever holds the
# management token (README.md).

locals {
  # config/acl/*.hcl, maintained with the code that needs each rule (the ACL
  # roles of issue 12). Whatever files are there become policies.
  consul_acl_policy_dir = var.consul_acl_policy_dir != null ? var.consul_acl_policy_dir : "${path.module}/../config/acl"
  consul_acl_policies = {
    for f in fileset(local.consul_acl_policy_dir, "*.hcl") : trimsuffix(f, ".hcl") => file("${local.consul_acl_policy_dir}/${f}")
  }

  consul_acl_config = {
    region                = var.region
    datacenter            = var.consul_datacenter
    consul_address        = "http://127.0.0.1:8500"
    management_token_file = "/etc/rollgate/consul-acl/management-token"
    policy_prefix         = "rollgate-"
    policies              = local.consul_acl_policies
    role_tokens = [
      {
        role        = "coordinator"
        description = "rollgate coordinator (${local.name})"
        secret_id   = aws_secretsmanager_secret.this["consul-coordinator-token"].arn
      },
    ]
    node_tokens = {
      secret_prefix = local.node_token_secret_prefix
      tags          = merge(var.tags, { Project = "rollgate", Environment = var.environment, ManagedBy = "rollgate-consul-acl" })
      groups = [
        {
          auto_scaling_group = local.web_asg_name
          reader_role_id     = aws_iam_role.node.unique_id
          service_identities = ["web"]
          roles              = ["agent"]
        },
        {
          auto_scaling_group = local.coordinator_asg_name
          reader_role_id     = aws_iam_role.coordinator.unique_id
          service_identities = []
          roles              = []
        },
      ]
    }
  }
}

# The policies rollgate's processes need. Missing files do not stop the
# plan (another change may still be adding them), but they are named.
check "consul_acl_policies" {
  assert {
    condition     = alltrue([for role in ["agent", "coordinator"] : contains(keys(local.consul_acl_policies), role)])
    error_message = "config/acl/ has no ${join(" or ", [for role in ["agent.hcl", "coordinator.hcl"] : role if !contains(keys(local.consul_acl_policies), trimsuffix(role, ".hcl"))])}: the Consul servers cannot create the policies of the web nodes' and the coordinator's tokens, which will lack every permission until a server boots with them."
  }
}
