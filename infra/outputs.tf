output "web_url" {
  description = "URL of the web service behind the load balancer."
  value       = "http://${aws_lb.web.dns_name}/"
}

output "web_auto_scaling_group" {
  description = "Name of the web Auto Scaling group the coordinator rolls out to."
  value       = aws_autoscaling_group.web.name
}

output "web_launch_template" {
  description = "Name, id and default version of the web launch template (Terraform writes the default version; the coordinator copies it with a new image)."
  value = {
    name            = aws_launch_template.web.name
    id              = aws_launch_template.web.id
    default_version = aws_launch_template.web.default_version
  }
}

output "node_token_secret_prefix" {
  description = "Name prefix of the per-instance Consul token secrets the Consul servers create (<prefix><instance id>)."
  value       = local.node_token_secret_prefix
}

output "initial_web_image" {
  description = "The AMI the web fleet was created with (later images are rolled out by the coordinator)."
  value       = data.aws_ami.web.id
}

output "vpc_id" {
  description = "Id of the VPC."
  value       = aws_vpc.main.id
}

output "private_subnet_ids" {
  description = "Private subnets (one per availability zone) holding every instance."
  value       = aws_subnet.private[*].id
}

output "secret_names" {
  description = "Secrets Manager secrets to fill out-of-band (README.md, Setting the secrets), by purpose."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.name }
}

output "coordinator_role_arn" {
  description = "IAM role of the coordinators."
  value       = aws_iam_role.coordinator.arn
}

output "web_node_role_arn" {
  description = "IAM role of the web nodes."
  value       = aws_iam_role.node.arn
}
