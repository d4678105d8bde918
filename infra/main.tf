# Names and facts shared by every file of the stack.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  name = "rollgate-${var.environment}"

  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
}
