# Ranges, not exact pins: a user's `terraform init` picks the newest compatible providers and
# writes them to .terraform.lock.hcl, which the user commits.
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.5.0, < 3.0.0" # 2.5 reads `excludes` as globs (`**/__pycache__`)
    }
    # 6.41 is the newest first release of an argument this module relies on (tests/terraform
    # keeps the table); nothing it uses changed in 7.0 (see its upgrade guide), so 7.x is allowed.
    google = {
      source  = "hashicorp/google"
      version = ">= 6.41.0, < 8.0.0"
    }
    # google_project_service_identity (the Google service agents, created in the same apply).
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.41.0, < 8.0.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
