locals {
  services = [
    "artifactregistry.googleapis.com", # function images
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com", # function builds
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com", # project number lookup
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com", # 2nd gen functions run on Cloud Run
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "enabled" {
  for_each = var.enable_apis ? toset(local.services) : toset([])
  project  = var.project_id
  service  = each.value
  # Other workloads in the project may use these APIs: destroying tally must not disable them.
  disable_on_destroy = false
}
