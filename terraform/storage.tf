# Three buckets: the outputs the workflows write (watched by the notification), the registry's
# specs, and the function sources. All three refuse public access and use IAM only (no ACLs).

locals {
  workflows_dir = "${path.module}/../workflows"
  # One object per workflow version: workflows/<workflow>/<version>.json, the registry's layout.
  workflow_specs = fileset(local.workflows_dir, "*/*.json")
}

resource "google_storage_bucket" "outputs" {
  # checkov:skip=CKV_GCP_62: access logs are not needed: Cloud Audit Logs record access, and the BigQuery event log records every object event.
  # checkov:skip=CKV_GCP_78: versioning is outputs_bucket.versioning, off by default: workflow outputs are written once, and versioning would keep a copy of every manifest the handler rewrites.
  project                     = var.project_id
  name                        = local.bucket_names.outputs
  location                    = coalesce(var.outputs_bucket.location, var.region)
  storage_class               = var.outputs_bucket.storage_class
  force_destroy               = var.outputs_bucket.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = var.outputs_bucket.versioning
  }
  dynamic "lifecycle_rule" {
    for_each = var.outputs_bucket.lifecycle_delete_age_days == null ? [] : [""]
    content {
      action {
        type = "Delete"
      }
      condition {
        age = var.outputs_bucket.lifecycle_delete_age_days
      }
    }
  }
  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket" "registry" {
  # checkov:skip=CKV_GCP_62: access logs are not needed: Cloud Audit Logs record access to the specs.
  project                     = var.project_id
  name                        = local.bucket_names.registry
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  # Specs are immutable once registered: versioning keeps a way back from a mistaken overwrite.
  versioning {
    enabled = true
  }
  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "workflow_specs" {
  for_each     = local.workflow_specs
  bucket       = google_storage_bucket.registry.name
  name         = "workflows/${each.value}"
  source       = "${local.workflows_dir}/${each.value}"
  content_type = "application/json"
  # Without it, an edited spec would not be uploaded again (the provider compares the hash).
  source_md5hash = filemd5("${local.workflows_dir}/${each.value}")
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: access logs are not needed: only Cloud Build reads the function archives.
  project                     = var.project_id
  name                        = local.bucket_names.sources
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  depends_on = [google_project_service.enabled]
}
