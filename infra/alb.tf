# Public Application Load Balancer in front of the web Auto Scaling group.
# The group registers and deregisters its instances in the target group
# itself.
#
# One judge of health: the ALB does not probe the app on its own. It asks
# the rollgate agent's readiness endpoint (GET /ready on
# var.agent_ready_port), which answers 200 only while every Consul check of
# the node's service passes (the agent's TTL check, which covers /health and
# the expected /version, and Consul's HTTP check through Apache) and the node
# is not in maintenance. So a node on the wrong version, or draining, leaves
# the load balancer exactly when it leaves Consul's passing set, and the
# group's ELB health check follows the same verdict.

resource "aws_lb" "web" {
  #checkov:skip=CKV2_AWS_20:No HTTPS listener to redirect to: the stack takes no certificate or domain (an HTTPS listener is the operator's addition, with ACM).
  #checkov:skip=CKV2_AWS_28:WAF is an account-level choice (rules, cost) this stack does not make; the ALB forwards to the web app only.
  #checkov:skip=CKV_AWS_91:Access logs need an S3 bucket with its own policy and lifecycle, outside this stack; Apache on every node logs each request.
  name               = "${local.name}-web"
  load_balancer_type = "application"
  internal           = false
  subnets            = aws_subnet.public[*].id
  security_groups    = [aws_security_group.alb.id]

  drop_invalid_header_fields = true
  idle_timeout               = 60
  enable_deletion_protection = var.alb_deletion_protection
}

resource "aws_lb_target_group" "web" {
  #checkov:skip=CKV_AWS_378:Plain HTTP from the ALB to Apache stays inside the VPC, between two security groups that admit only each other.
  name     = "${local.name}-web"
  vpc_id   = aws_vpc.main.id
  port     = 80
  protocol = "HTTP"

  # In-flight requests get this long when an instance leaves the group; the
  # rollgate agent's drain (maintenance mode, then deregistration from Consul)
  # happens after it, when the instance shuts down.
  deregistration_delay = 20

  health_check {
    path                = "/ready"
    port                = tostring(var.agent_ready_port)
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:HTTP only: the stack takes no certificate or domain (see aws_lb.web).
  #checkov:skip=CKV_AWS_103:No TLS listener, hence no TLS policy (see aws_lb.web).
  load_balancer_arn = aws_lb.web.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.web.arn
  }
}
