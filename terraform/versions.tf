# Ranges, not exact pins: a user's `terraform init` picks the newest compatible providers and
# writes them to .terraform.lock.hcl, which the user commits.
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.5.0, < 3.0.0" # 2.5 reads `excludes` as globs (`**/__pycache__`)
    }
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0.0, < 7.0.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
