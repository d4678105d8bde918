# Secrets live in AWS Secrets Manager. Terraform creates only the secret
# *containers* (name, description, policy-relevant ARN) and never a value:
# there is no aws_secretsmanager_secret_version here, so no secret value ever
# reaches the Terraform state, the plan output or a variable file. The values
# are put out-of-band by an operator (README.md, "Setting the secrets"), or,
# for the Consul tokens the servers create, by the servers' ACL bootstrap
# (consul-acl.tf):
#
#   aws secretsmanager put-secret-value --secret-id <name> --secret-string file://token.txt
#
# Instances read their own secrets at boot with node-secrets.service (see
# puppet/modules/node_secrets), authorised by the instance role (iam.tf): each
# role may read only the secrets listed for it below.

locals {
  # readers: the instance roles that may read the value. writers: the roles
  # that may put it (the Consul servers' ACL bootstrap generates the role
  # tokens it creates; a human puts every other value).
  secrets = {
    consul-gossip-key = {
      description = "Consul gossip encryption key (consul keygen)."
      readers     = ["consul_server", "web", "coordinator"]
      writers     = []
    }
    consul-management-token = {
      description = "Consul initial management token (a UUID); the servers bootstrap the ACL system with it (acl.tokens.initial_management) and the ACL bootstrap uses it to create every policy and token."
      readers     = ["consul_server"]
      writers     = []
    }
    consul-server-tls-key = {
      description = "PEM private key of the Consul servers' TLS certificate (var.consul_server_cert_pem)."
      readers     = ["consul_server"]
      writers     = []
    }
    consul-coordinator-token = {
      description = "Secret id of the rollgate coordinator's Consul token (policy rollgate-coordinator, from config/acl/coordinator.hcl); generated and created by the Consul servers' ACL bootstrap."
      readers     = ["consul_server", "coordinator"]
      writers     = ["consul_server"]
    }
    slack-token = {
      description = "Slack bot token (xoxb-...) the coordinator posts alerts with."
      readers     = ["coordinator"]
      writers     = []
    }
    smtp-password = {
      description = "Password of var.smtp_username on var.smtp_host."
      readers     = ["coordinator"]
      writers     = []
    }
  }

  # Per-instance Consul tokens: <prefix><instance id>, created and deleted by
  # the Consul servers' ACL bootstrap, never by Terraform (consul-acl.tf).
  node_token_secret_prefix = "${local.name}/node-token/"
}

resource "aws_secretsmanager_secret" "this" {
  for_each = local.secrets

  #checkov:skip=CKV_AWS_149:The AWS managed key encrypts these; a customer managed key would add a key policy to keep in step with every reader and writer role for no gain in who can read (IAM already scopes each secret to its readers).
  #checkov:skip=CKV2_AWS_57:No Lambda rotation: the values are set by a person or by the Consul ACL bootstrap, and rotating means putting a new value and replacing the instances that read it (README, Setting the secrets).

  name        = "${local.name}/${each.key}"
  description = each.value.description

  # A deleted secret can be restored for a week: an accidental destroy does
  # not lose a token that must otherwise be re-issued.
  recovery_window_in_days = 7
}

locals {
  # Secret ARNs each instance role may read or write, by role.
  secret_arns_by_reader = {
    for reader in ["web", "consul_server", "coordinator"] : reader => [
      for key, secret in local.secrets : aws_secretsmanager_secret.this[key].arn if contains(secret.readers, reader)
    ]
  }
  secret_arns_by_writer = {
    for writer in ["consul_server"] : writer => [
      for key, secret in local.secrets : aws_secretsmanager_secret.this[key].arn if contains(secret.writers, writer)
    ]
  }
}
