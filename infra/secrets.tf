# Secrets live in AWS Secrets Manager. Terraform creates only the secret
# *containers* (name, description, policy-relevant ARN) and never a value:
# there is no aws_secretsmanager_secret_version here, so no secret value ever
# reaches the Terraform state, the plan output or a variable file. The values
# are put out-of-band by an operator (README.md, "Setting the secrets"):
#
#   aws secretsmanager put-secret-value --secret-id <name> --secret-string file://token.txt
#
# Instances read their own secrets at boot with node-secrets.service (see
# puppet/modules/node_secrets), authorised by the instance role (iam.tf): each
# role may read only the secrets listed for it below.

locals {
  secrets = {
    consul-gossip-key = {
      description = "Consul gossip encryption key (consul keygen)."
      readers     = ["web", "consul_server", "coordinator"]
    }
    consul-management-token = {
      description = "Consul initial management token (a UUID); the servers bootstrap the ACL system with it (acl.tokens.initial_management)."
      readers     = ["consul_server"]
    }
    consul-server-token = {
      description = "Consul ACL token of the Consul servers' agents."
      readers     = ["consul_server"]
    }
    consul-server-tls-key = {
      description = "PEM private key of the Consul servers' TLS certificate (var.consul_server_cert_pem)."
      readers     = ["consul_server"]
    }
    consul-web-token = {
      description = "Consul ACL token of web nodes: their Consul agent and the rollgate agent (node write, service web write)."
      readers     = ["web"]
    }
    consul-coordinator-token = {
      description = "Consul ACL token of coordinator nodes: their Consul agent and rollgate coordinator (KV rollgate/, sessions, health read)."
      readers     = ["coordinator"]
    }
    slack-token = {
      description = "Slack bot token (xoxb-...) the coordinator posts alerts with."
      readers     = ["coordinator"]
    }
    smtp-password = {
      description = "Password of var.smtp_username on var.smtp_host."
      readers     = ["coordinator"]
    }
  }
}

resource "aws_secretsmanager_secret" "this" {
  for_each = local.secrets

  name        = "${local.name}/${each.key}"
  description = each.value.description

  # A deleted secret can be restored for a week: an accidental destroy does
  # not lose a token that must otherwise be re-issued.
  recovery_window_in_days = 7
}

locals {
  # Secret ARNs each instance role may read, by reader.
  secret_arns_by_reader = {
    for reader in ["web", "consul_server", "coordinator"] : reader => [
      for key, secret in local.secrets : aws_secretsmanager_secret.this[key].arn if contains(secret.readers, reader)
    ]
  }
}
