# Public Application Load Balancer in front of the web Auto Scaling group.
# The group registers and deregisters its instances in the target group
# itself; the ALB health check and the group's ELB health check use the same
# /health endpoint that Consul checks, through Apache.

resource "aws_lb" "web" {
  name               = "${local.name}-web"
  load_balancer_type = "application"
  internal           = false
  subnets            = aws_subnet.public[*].id
  security_groups    = [aws_security_group.alb.id]

  drop_invalid_header_fields = true
  idle_timeout               = 60
}

resource "aws_lb_target_group" "web" {
  name     = "${local.name}-web"
  vpc_id   = aws_vpc.main.id
  port     = 80
  protocol = "HTTP"

  # In-flight requests get this long when an instance leaves the group; the
  # rollgate agent's drain (maintenance mode, then deregistration from Consul)
  # happens after it, when the instance shuts down.
  deregistration_delay = 20

  health_check {
    path                = "/health"
    port                = "traffic-port"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.web.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.web.arn
  }
}
