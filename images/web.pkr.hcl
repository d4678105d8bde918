# The `web` AMI: Ubuntu 24.04 LTS + the web app behind Apache + a Consul
# client agent + the rollgate agent, configured by a masterless Puppet run.
#
#   packer init .
#   packer build -var version=1.2.3 -var consul_sha256=<sha256> .
#   rollgate publish --manifest packer-manifest.json
#
# See README.md beside this file for the inputs and how the version flows.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      version = ">= 1.3.0, < 2.0.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

variable "version" {
  type        = string
  description = "Version of the web release being baked (semantic version, e.g. 1.2.3). Tagged on the AMI as rollgate:version, exported to the app as WEB_VERSION and written to the rollgate agent's expected_version."

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?$", var.version))
    error_message = "The version must be a semantic version such as 1.2.3 or 1.3.0-rc.1."
  }
}

variable "artifact" {
  type        = string
  description = "Artifact name the image is published under (tag rollgate:artifact); the coordinator watches this name."
  default     = "acmeinc/web"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$", var.artifact))
    error_message = "The artifact must look like 'organisation/name' in lower case, e.g. acmeinc/web."
  }
}

variable "region" {
  type        = string
  description = "AWS region the build instance runs in and the AMI is registered in."
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1 or us-east-2."
  }
}

variable "architecture" {
  type        = string
  description = "CPU architecture of the image: amd64 or arm64. The release binaries and the Consul archive must match it."
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.architecture)
    error_message = "The architecture must be amd64 or arm64."
  }
}

variable "instance_type" {
  type        = string
  description = "Instance type of the temporary build instance (must match the architecture: e.g. t3.small for amd64, t4g.small for arm64)."
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "The instance_type must be an EC2 instance type such as t3.small or m7g.large."
  }
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the build instance; empty to use the default VPC."
  default     = ""

  validation {
    condition     = var.subnet_id == "" || can(regex("^subnet-[0-9a-f]{8,17}$", var.subnet_id))
    error_message = "The subnet_id must be empty or a subnet id such as subnet-0123456789abcdef0."
  }
}

variable "rollgate_binary" {
  type        = string
  description = "Path on this machine of the rollgate release binary; empty for ../target/dist/rollgate (cargo build --profile dist)."
  default     = ""
}

variable "web_binary" {
  type        = string
  description = "Path on this machine of the web release binary; empty for ../target/dist/web (cargo build --profile dist)."
  default     = ""
}

variable "consul_version" {
  type        = string
  description = "Consul version installed on the image; the build fails if the binary in consul_zip reports another version."
  default     = "1.20.2"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.consul_version))
    error_message = "The consul_version must be a version such as 1.20.2."
  }
}

variable "consul_zip" {
  type        = string
  description = "Path on this machine of the Consul release archive (consul_<version>_linux_<arch>.zip from HashiCorp's release site); empty for downloads/consul_<consul_version>_linux_<architecture>.zip beside this template."
  default     = ""
}

variable "consul_sha256" {
  type        = string
  description = "SHA-256 of the Consul release archive, from HashiCorp's signed SHA256SUMS file; the build verifies the archive against it."

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.consul_sha256))
    error_message = "The consul_sha256 must be 64 lower-case hexadecimal characters."
  }
}

variable "consul_datacenter" {
  type        = string
  description = "Consul datacenter the agent joins; must match infra/ (variable consul_datacenter)."
  default     = "dc1"

  validation {
    condition     = can(regex("^[a-z0-9_-]+$", var.consul_datacenter))
    error_message = "The consul_datacenter may hold lower-case letters, digits, '_' and '-' only."
  }
}

variable "consul_join_tag_key" {
  type        = string
  description = "EC2 tag key marking the Consul servers for cloud auto-join; must match infra/."
  default     = "consul-cluster"
}

variable "consul_join_tag_value" {
  type        = string
  description = "Value of the Consul servers' auto-join tag; must match infra/."
  default     = "rollgate"
}

variable "puppet_package" {
  type        = string
  description = "Ubuntu package that provides `puppet apply` (puppet-agent on Ubuntu 24.04). Removed again at the end of the build."
  default     = "puppet-agent"
}

locals {
  # Unique, sortable suffix; AMI names must be unique per account and region.
  timestamp = formatdate("YYYYMMDDhhmmss", timestamp())

  # AMI names may not hold every character an artifact name may.
  ami_name = "${replace(var.artifact, "/", "-")}-${var.version}-${var.architecture}-${local.timestamp}"

  rollgate_binary = var.rollgate_binary != "" ? var.rollgate_binary : "${path.root}/../target/dist/rollgate"
  web_binary      = var.web_binary != "" ? var.web_binary : "${path.root}/../target/dist/web"
  consul_zip      = var.consul_zip != "" ? var.consul_zip : "${path.root}/downloads/consul_${var.consul_version}_linux_${var.architecture}.zip"

  # The coordinator finds images by these tags: rollgate:artifact selects the
  # artifact, rollgate:version names the release. infra/ checks the Consul
  # tags against its own settings before it launches the image.
  image_tags = {
    Name                         = local.ami_name
    "rollgate:artifact"          = var.artifact
    "rollgate:version"           = var.version
    "rollgate:consul"            = var.consul_version
    "rollgate:consul-datacenter" = var.consul_datacenter
    "rollgate:consul-join"       = "${var.consul_join_tag_key}=${var.consul_join_tag_value}"
    "rollgate:base-ami"          = "{{ .SourceAMI }}"
    "rollgate:base-ami-name"     = "{{ .SourceAMIName }}"
  }
}

# ---------------------------------------------------------------------------
# Source: the current Ubuntu LTS published by Canonical
# ---------------------------------------------------------------------------

source "amazon-ebs" "web" {
  region          = var.region
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id
  ssh_username    = "ubuntu"
  ami_name        = local.ami_name
  ami_description = "${var.artifact} ${var.version} (rollgate web node, Ubuntu 24.04 LTS, ${var.architecture})"

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${var.architecture}-server-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    # Canonical's account: only images Canonical published can match.
    owners      = ["099720109477"]
    most_recent = true
  }

  # IMDSv2 only, on the build instance and on every instance of the image.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  encrypt_boot = true

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 8
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags          = local.image_tags
  snapshot_tags = local.image_tags
  run_tags = {
    Name                = "packer-${local.ami_name}"
    "rollgate:building" = var.artifact
  }
}

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

build {
  name    = "web"
  sources = ["source.amazon-ebs.web"]

  # Base packages: Puppet from Ubuntu's archive, unzip for the Consul archive.
  provisioner "shell" {
    script           = "${path.root}/scripts/install-base.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["PUPPET_PACKAGE=${var.puppet_package}"]
  }

  # Release binaries and the Puppet tree go to /tmp/build, where the Puppet
  # manifests pick them up; cleanup.sh removes the directory.
  provisioner "file" {
    source      = local.rollgate_binary
    destination = "/tmp/build/rollgate"
  }

  provisioner "file" {
    source      = local.web_binary
    destination = "/tmp/build/web"
  }

  provisioner "file" {
    source      = local.consul_zip
    destination = "/tmp/build/consul.zip"
  }

  # Trailing slash: upload the contents of puppet/ into /tmp/build/puppet.
  provisioner "file" {
    source      = "${path.root}/../puppet/"
    destination = "/tmp/build/puppet"
  }

  provisioner "shell" {
    script          = "${path.root}/scripts/install-consul.sh"
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "CONSUL_VERSION=${var.consul_version}",
      "CONSUL_SHA256=${var.consul_sha256}",
    ]
  }

  # role::web, masterless; the version and artifact reach Puppet as facts.
  provisioner "shell" {
    script          = "${path.root}/scripts/apply-puppet.sh"
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "ROLLGATE_VERSION=${var.version}",
      "ROLLGATE_ARTIFACT=${var.artifact}",
      "CONSUL_DATACENTER=${var.consul_datacenter}",
      "CONSUL_JOIN_TAG_KEY=${var.consul_join_tag_key}",
      "CONSUL_JOIN_TAG_VALUE=${var.consul_join_tag_value}",
    ]
  }

  provisioner "shell" {
    script           = "${path.root}/scripts/cleanup.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["PUPPET_PACKAGE=${var.puppet_package}"]
  }

  # packer-manifest.json records the AMI id per region; `rollgate publish
  # --manifest packer-manifest.json` reads it (the last run, by
  # last_run_uuid) and registers the image as a new version of the artifact.
  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      artifact       = var.artifact
      version        = var.version
      architecture   = var.architecture
      consul_version = var.consul_version
    }
  }
}
