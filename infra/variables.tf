# Inputs of the rollgate stack. Every rule has a message that names the
# variable, what was wrong and what is expected: Terraform stops on the first
# plan with that message.
#
# This file must stay self-contained (no reference to resources, data sources
# or locals): CI plans it on its own, without providers, to test the rules.

# --- Where ------------------------------------------------------------------

variable "region" {
  type        = string
  description = "AWS region of the whole stack, e.g. eu-west-1. Must be the region the web image was built in."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1 or us-east-2."
  }
}

variable "environment" {
  type        = string
  description = "Short name of this deployment (e.g. prod, staging); prefixes every resource name."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "The environment must be 2 to 16 characters: a lower-case letter, then lower-case letters, digits or '-'."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags put on every resource."
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : !startswith(lower(k), "rollgate:") && !startswith(lower(k), "aws:")])
    error_message = "The tags must not use the reserved prefixes 'rollgate:' (used by rollgate for access control) or 'aws:'."
  }
}

# --- Network ----------------------------------------------------------------

variable "vpc_cidr" {
  type        = string
  description = "IPv4 CIDR of the VPC, between /16 and /22; split into one public and one private subnet per availability zone."
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && can(regex("^[0-9.]+/(1[6-9]|2[0-2])$", var.vpc_cidr))
    error_message = "The vpc_cidr must be a valid IPv4 CIDR block with a prefix length between /16 and /22, e.g. 10.20.0.0/16."
  }
}

variable "az_count" {
  type        = number
  description = "Number of availability zones to spread the subnets, NAT gateways and instances over."
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4 && floor(var.az_count) == var.az_count
    error_message = "The az_count must be a whole number from 2 to 4: at least 2 zones are needed to survive the loss of one."
  }
}

variable "nat_gateway_per_az" {
  type        = bool
  description = "One NAT gateway per availability zone (true) or a single shared one (false: cheaper, but a zone outage cuts the others' outbound traffic)."
  default     = true
}

variable "alb_ingress_cidrs" {
  type        = list(string)
  description = "IPv4 CIDR blocks allowed to reach the load balancer on port 80."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.alb_ingress_cidrs) >= 1 && alltrue([for c in var.alb_ingress_cidrs : can(cidrnetmask(c))])
    error_message = "The alb_ingress_cidrs must hold at least one valid IPv4 CIDR block, e.g. 0.0.0.0/0 or 203.0.113.0/24."
  }
}

# --- Web fleet --------------------------------------------------------------

variable "artifact" {
  type        = string
  description = "Artifact name of the web image (AMI tag rollgate:artifact), as built by images/."
  default     = "acmeinc/web"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$", var.artifact))
    error_message = "The artifact must look like 'organisation/name' in lower case, e.g. acmeinc/web."
  }
}

variable "web_instance_type" {
  type        = string
  description = "Instance type of the web nodes. General-purpose or compute families only (t3, t3a, t4g, m5, m6i, m6a, m6g, m7i, m7a, m7g, c5, c6i, c6a, c6g, c7i, c7a, c7g); arm64 types (a 'g' family) need an arm64 image."
  default     = "t3.small"

  validation {
    condition     = can(regex("^(t3|t3a|t4g|m5|m6i|m6a|m6g|m7i|m7a|m7g|c5|c6i|c6a|c6g|c7i|c7a|c7g)\\.(nano|micro|small|medium|large|[0-9]*xlarge)$", var.web_instance_type))
    error_message = "The web_instance_type must be an instance type of an allowed family (t3, t3a, t4g, m5, m6i, m6a, m6g, m7i, m7a, m7g, c5, c6i, c6a, c6g, c7i, c7a, c7g) and a valid size, e.g. t3.small or m7g.large."
  }
}

variable "web_min_size" {
  type        = number
  description = "Minimum number of web instances."
  default     = 2

  validation {
    condition     = var.web_min_size >= 1 && floor(var.web_min_size) == var.web_min_size
    error_message = "The web_min_size must be a whole number of at least 1."
  }
}

variable "web_max_size" {
  type        = number
  description = "Maximum number of web instances. A rollout surges above the desired capacity by the batch size, so leave room for it."
  default     = 6

  validation {
    condition     = var.web_max_size >= var.web_min_size && floor(var.web_max_size) == var.web_max_size
    error_message = "The web_max_size must be a whole number no smaller than web_min_size."
  }
}

variable "web_desired_capacity" {
  type        = number
  description = "Initial number of web instances. Only used at creation: afterwards the coordinator owns the desired capacity during rollouts."
  default     = 2

  validation {
    condition     = var.web_desired_capacity >= var.web_min_size && var.web_desired_capacity <= var.web_max_size && floor(var.web_desired_capacity) == var.web_desired_capacity
    error_message = "The web_desired_capacity must be a whole number between web_min_size and web_max_size."
  }
}

variable "node_image_id" {
  type        = string
  description = "AMI of the Consul servers and coordinators: an image built by images/ (it carries the consul and rollgate binaries), pinned so a new web image does not replace them. Changing it rolls the coordinators and gives replaced Consul servers the new image."

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.node_image_id))
    error_message = "The node_image_id must be an AMI id such as ami-0123456789abcdef0 (an image built by images/)."
  }
}

variable "agent_ready_port" {
  type        = number
  description = "Port of the rollgate agent's readiness endpoint (GET /ready, 200 only while every Consul check of the node's service passes); the ALB's health check asks it. Must match [agent] ready_listen in the image (puppet/modules/rollgate)."
  default     = 9102

  validation {
    condition     = var.agent_ready_port >= 1024 && var.agent_ready_port <= 65535 && floor(var.agent_ready_port) == var.agent_ready_port && !contains([8300, 8301, 8302, 8500, 8600], var.agent_ready_port)
    error_message = "The agent_ready_port must be a whole number from 1024 to 65535 that is not a Consul port (8300-8302, 8500, 8600)."
  }
}

variable "alb_deletion_protection" {
  type        = bool
  description = "Protect the load balancer from deletion (set false before `terraform destroy`)."
  default     = true
}

# --- Rollouts ---------------------------------------------------------------

variable "approval" {
  type        = string
  description = "How a planned rollout is approved: manual (an operator runs `rollgate approve`) or auto."
  default     = "manual"

  validation {
    condition     = contains(["manual", "auto"], var.approval)
    error_message = "The approval must be \"manual\" or \"auto\"."
  }
}

variable "rollout_batch_size" {
  type        = number
  description = "New web instances launched (and then old ones retired) per rollout step."
  default     = 1

  validation {
    condition     = var.rollout_batch_size >= 1 && floor(var.rollout_batch_size) == var.rollout_batch_size
    error_message = "The rollout_batch_size must be a whole number of at least 1."
  }
}

variable "rollout_min_healthy_time" {
  type        = string
  description = "How long a new instance must stay passing in Consul before it counts as healthy, e.g. 10s."
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.rollout_min_healthy_time))
    error_message = "The rollout_min_healthy_time must be a duration such as 10s, 2m or 1h."
  }
}

variable "rollout_healthy_deadline" {
  type        = string
  description = "A new instance not healthy within this time fails the rollout, e.g. 5m."
  default     = "5m"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.rollout_healthy_deadline))
    error_message = "The rollout_healthy_deadline must be a duration such as 5m or 300s."
  }
}

variable "rollout_progress_deadline" {
  type        = string
  description = "A rollout with no instance becoming healthy within this time fails, e.g. 10m."
  default     = "10m"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.rollout_progress_deadline))
    error_message = "The rollout_progress_deadline must be a duration such as 10m or 600s."
  }
}

# --- Consul -----------------------------------------------------------------

variable "consul_server_count" {
  type        = number
  description = "Number of Consul servers: 3 (tolerates one failure) or 5 (tolerates two)."
  default     = 3

  validation {
    condition     = contains([3, 5], var.consul_server_count)
    error_message = "The consul_server_count must be 3 or 5: an odd quorum size that tolerates at least one failure."
  }
}

variable "consul_instance_type" {
  type        = string
  description = "Instance type of the Consul servers (same allowed families as web_instance_type)."
  default     = "t3.small"

  validation {
    condition     = can(regex("^(t3|t3a|t4g|m5|m6i|m6a|m6g|m7i|m7a|m7g|c5|c6i|c6a|c6g|c7i|c7a|c7g)\\.(nano|micro|small|medium|large|[0-9]*xlarge)$", var.consul_instance_type))
    error_message = "The consul_instance_type must be an instance type of an allowed family (t3, t3a, t4g, m5, m6i, m6a, m6g, m7i, m7a, m7g, c5, c6i, c6a, c6g, c7i, c7a, c7g) and a valid size, e.g. t3.small."
  }
}

variable "consul_datacenter" {
  type        = string
  description = "Consul datacenter name; must match the image build (images/, variable consul_datacenter)."
  default     = "dc1"

  validation {
    condition     = can(regex("^[a-z0-9_-]+$", var.consul_datacenter))
    error_message = "The consul_datacenter may hold lower-case letters, digits, '_' and '-' only."
  }
}

variable "consul_join_tag_key" {
  type        = string
  description = "EC2 tag key that marks the Consul servers for cloud auto-join; must match the image build."
  default     = "consul-cluster"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.:/-]{1,127}$", var.consul_join_tag_key))
    error_message = "The consul_join_tag_key must be 1 to 127 characters of letters, digits and _ . : / -."
  }
}

variable "consul_join_tag_value" {
  type        = string
  description = "Value of the Consul servers' auto-join tag; must match the image build."
  default     = "rollgate"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.:/-]{1,255}$", var.consul_join_tag_value))
    error_message = "The consul_join_tag_value must be 1 to 255 characters of letters, digits and _ . : / -."
  }
}

variable "consul_ca_cert_pem" {
  type        = string
  description = "PEM certificate of the CA that signed the Consul servers' certificates (public; written to every node)."

  validation {
    condition     = can(regex("^-----BEGIN CERTIFICATE-----", trimspace(var.consul_ca_cert_pem)))
    error_message = "The consul_ca_cert_pem must be a PEM certificate starting with -----BEGIN CERTIFICATE-----."
  }
}

variable "consul_server_cert_pem" {
  type        = string
  description = "PEM certificate of the Consul servers, valid for server.<datacenter>.consul (public; its private key is a secret, see secrets.tf)."

  validation {
    condition     = can(regex("^-----BEGIN CERTIFICATE-----", trimspace(var.consul_server_cert_pem)))
    error_message = "The consul_server_cert_pem must be a PEM certificate starting with -----BEGIN CERTIFICATE-----."
  }
}

variable "consul_acl_policy_dir" {
  type        = string
  description = "Directory of the Consul ACL policy files (<role>.hcl) the Consul servers turn into policies and roles; null for the repository's config/acl. A relative path is taken from where Terraform runs."
  default     = null

  validation {
    condition     = var.consul_acl_policy_dir == null || length(trimspace(coalesce(var.consul_acl_policy_dir, " "))) > 0
    error_message = "The consul_acl_policy_dir must be null (config/acl of this repository) or a directory path."
  }
}

# --- Coordinator ------------------------------------------------------------

variable "coordinator_count" {
  type        = number
  description = "Number of coordinator instances: 1, or 2 for a standby (one leader via a Consul lock)."
  default     = 2

  validation {
    condition     = contains([1, 2], var.coordinator_count)
    error_message = "The coordinator_count must be 1 or 2."
  }
}

variable "coordinator_instance_type" {
  type        = string
  description = "Instance type of the coordinators (same allowed families as web_instance_type)."
  default     = "t3.micro"

  validation {
    condition     = can(regex("^(t3|t3a|t4g|m5|m6i|m6a|m6g|m7i|m7a|m7g|c5|c6i|c6a|c6g|c7i|c7a|c7g)\\.(nano|micro|small|medium|large|[0-9]*xlarge)$", var.coordinator_instance_type))
    error_message = "The coordinator_instance_type must be an instance type of an allowed family (t3, t3a, t4g, m5, m6i, m6a, m6g, m7i, m7a, m7g, c5, c6i, c6a, c6g, c7i, c7a, c7g) and a valid size, e.g. t3.micro."
  }
}

# --- Notifications ----------------------------------------------------------

variable "slack_channel" {
  type        = string
  description = "Slack channel the coordinator posts to: a name such as #ops or a channel id such as C0123456789. The bot token is a secret (secrets.tf)."

  validation {
    condition     = can(regex("^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{8,12})$", var.slack_channel))
    error_message = "The slack_channel must be a channel name such as #ops (lower case) or a channel id such as C0123456789."
  }
}

variable "smtp_host" {
  type        = string
  description = "SMTP server for email alerts (STARTTLS is required)."

  validation {
    condition     = can(regex("^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$", var.smtp_host))
    error_message = "The smtp_host must be a fully qualified host name such as email-smtp.eu-west-1.example.com."
  }
}

variable "smtp_port" {
  type        = number
  description = "SMTP submission port using STARTTLS (587, or 25/2587)."
  default     = 587

  validation {
    condition     = contains([25, 587, 2587], var.smtp_port)
    error_message = "The smtp_port must be a STARTTLS submission port: 587, 25 or 2587."
  }
}

variable "smtp_username" {
  type        = string
  description = "SMTP user name. The password is a secret (secrets.tf)."

  validation {
    condition     = length(trimspace(var.smtp_username)) > 0
    error_message = "The smtp_username must not be empty."
  }
}

variable "email_from" {
  type        = string
  description = "Sender address of email alerts."

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.email_from))
    error_message = "The email_from must be an email address such as rollgate@example.com."
  }
}

variable "email_to" {
  type        = list(string)
  description = "Recipients of email alerts."

  validation {
    condition     = length(var.email_to) >= 1 && alltrue([for a in var.email_to : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", a))])
    error_message = "The email_to must hold at least one email address, each like ops@example.com."
  }
}
