# Security groups. Every rule is a separate resource (the provider's
# recommended style), named after what it allows.
#
#   alb          80 from var.alb_ingress_cidrs; to web nodes on 80 and on the
#                rollgate agent's readiness port (health checks)
#   web          80 and the readiness port from the ALB only
#   consul       8300 (server RPC), 8301 tcp+udp (LAN gossip), 8500 (HTTP API)
#                within the VPC; attached to every node: servers, web,
#                coordinators
#   node_egress  HTTPS out (AWS APIs through NAT; Slack on coordinators)
#
# Instance metadata, the VPC DNS resolver and the Amazon Time Sync Service are
# link-local and not filtered by security groups.

# --- Load balancer ----------------------------------------------------------

resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "rollgate web load balancer"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-alb" }
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:The public load balancer is the stack's front door; var.alb_ingress_cidrs narrows it where the service is not public.
  for_each = toset(var.alb_ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "alb_to_web" {
  security_group_id            = aws_security_group.alb.id
  description                  = "HTTP and health checks to the web nodes"
  referenced_security_group_id = aws_security_group.web.id
  ip_protocol                  = "tcp"
  from_port                    = 80
  to_port                      = 80
}

resource "aws_vpc_security_group_egress_rule" "alb_to_web_ready" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Health checks to the rollgate agent's /ready on the web nodes"
  referenced_security_group_id = aws_security_group.web.id
  ip_protocol                  = "tcp"
  from_port                    = var.agent_ready_port
  to_port                      = var.agent_ready_port
}

# --- Web nodes --------------------------------------------------------------

resource "aws_security_group" "web" {
  name        = "${local.name}-web"
  description = "rollgate web nodes (Apache on 80)"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-web" }
}

resource "aws_vpc_security_group_ingress_rule" "web_http_from_alb" {
  #checkov:skip=CKV_AWS_260:Not from 0.0.0.0/0: the source is the ALB's security group (referenced_security_group_id), which checkov does not resolve.
  security_group_id            = aws_security_group.web.id
  description                  = "HTTP from the load balancer only"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = 80
  to_port                      = 80
}

resource "aws_vpc_security_group_ingress_rule" "web_ready_from_alb" {
  security_group_id            = aws_security_group.web.id
  description                  = "rollgate agent /ready from the load balancer only"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = var.agent_ready_port
  to_port                      = var.agent_ready_port
}

# --- Consul (every node) ----------------------------------------------------

resource "aws_security_group" "consul" {
  name        = "${local.name}-consul"
  description = "Consul agents and servers within the VPC"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-consul" }
}

locals {
  consul_ports = {
    server_rpc      = { protocol = "tcp", port = 8300, description = "Consul server RPC" }
    serf_lan_tcp    = { protocol = "tcp", port = 8301, description = "Consul LAN gossip (tcp)" }
    serf_lan_udp    = { protocol = "udp", port = 8301, description = "Consul LAN gossip (udp)" }
    http_api_in_vpc = { protocol = "tcp", port = 8500, description = "Consul HTTP API (agents bind it to loopback; open for operators who widen client_addr)" }
  }
}

resource "aws_vpc_security_group_ingress_rule" "consul" {
  for_each = local.consul_ports

  security_group_id = aws_security_group.consul.id
  description       = each.value.description
  cidr_ipv4         = aws_vpc.main.cidr_block
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "consul" {
  for_each = local.consul_ports

  security_group_id = aws_security_group.consul.id
  description       = each.value.description
  cidr_ipv4         = aws_vpc.main.cidr_block
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
}

# --- Outbound HTTPS (every node) ---------------------------------------------

resource "aws_security_group" "node_egress" {
  name        = "${local.name}-node-egress"
  description = "HTTPS to AWS APIs (and Slack from coordinators)"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-node-egress" }
}

resource "aws_vpc_security_group_egress_rule" "node_https" {
  security_group_id = aws_security_group.node_egress.id
  description       = "HTTPS to AWS APIs and Slack"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# --- Coordinators -----------------------------------------------------------

resource "aws_security_group" "coordinator" {
  name        = "${local.name}-coordinator"
  description = "rollgate coordinators: no inbound, SMTP out"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-coordinator" }
}

resource "aws_vpc_security_group_egress_rule" "coordinator_smtp" {
  security_group_id = aws_security_group.coordinator.id
  description       = "SMTP submission (STARTTLS) for email alerts"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = var.smtp_port
  to_port           = var.smtp_port
}
