terraform {
  # 1.9+ for validation rules that refer to other variables.
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Project     = "rollgate"
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}
