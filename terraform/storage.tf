# Three buckets: the outputs the workflows write (watched by the notification), the registry's
# specs, and the function sources. All three refuse public access and use IAM only (no ACLs).

locals {
  workflows_dir = "${path.module}/../workflows"
  # One object per workflow version: workflows/<workflow>/<version>.json, the registry's layout.
  workflow_specs = fileset(local.workflows_dir, "*/*.json")
  spec_md5_key   = "tally-source-md5"
  # Spec files whose content differs from what was uploaded (objects created before the metadata
  # existed carry none: they are taken as unchanged).
  edited_specs = sort([
    for spec, object in google_storage_bucket_object.workflow_specs : "workflows/${spec}"
    if lookup(coalesce(object.metadata, {}), local.spec_md5_key, filemd5("${local.workflows_dir}/${spec}")) != filemd5("${local.workflows_dir}/${spec}")
  ])
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
  project  = var.project_id
  name     = local.bucket_names.registry
  location = var.region
  # A versioned bucket keeps noncurrent versions after its objects are deleted: without it,
  # `terraform destroy` is refused. registry.bucket_force_destroy = false keeps the specs instead.
  force_destroy               = var.registry.bucket_force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  # Specs are immutable once registered: versioning keeps a way back from a mistaken overwrite,
  # for noncurrent_version_retention_days.
  versioning {
    enabled = true
  }
  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
  }
  depends_on = [google_project_service.enabled]
}

# A registered version is immutable (the registry answers 409 to a different spec of the same
# version, and the event handler caches specs forever). So each spec is written once: an edited
# file is not uploaded again (ignore_changes), and the registry function's precondition refuses the
# plan, naming the file, by comparing it with the MD5 recorded in the object's metadata.
resource "google_storage_bucket_object" "workflow_specs" {
  for_each     = local.workflow_specs
  bucket       = google_storage_bucket.registry.name
  name         = "workflows/${each.value}"
  source       = "${local.workflows_dir}/${each.value}"
  content_type = "application/json"
  metadata = {
    (local.spec_md5_key) = filemd5("${local.workflows_dir}/${each.value}")
  }
  lifecycle {
    ignore_changes = [detect_md5hash, metadata, source_md5hash]
  }
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: access logs are not needed: only Cloud Build reads the function archives.
  project  = var.project_id
  name     = local.bucket_names.sources
  location = var.region
  # Only archives Terraform builds again from the checkout: nothing to keep at destroy.
  force_destroy               = true
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = true
  }
  # Each source change replaces an archive (new MD5, new name); the old one becomes noncurrent.
  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
  }
  depends_on = [google_project_service.enabled]
}
