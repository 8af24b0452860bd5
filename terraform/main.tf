# Names, paths and identities shared by the files of this module. Each file keeps the locals of its
# own concern; these are used across files.

locals {
  bucket_names = {
    outputs  = coalesce(var.outputs_bucket.name, "${var.project_id}-${var.prefix}-outputs")
    registry = "${var.project_id}-${var.prefix}-registry"
    sources  = "${var.project_id}-${var.prefix}-sources"
  }
  # Fully qualified ids (project.dataset.table), the form the event handler and `bq` take.
  dataset_ref  = "${var.project_id}.${var.bigquery.dataset_id}"
  events_table = "${local.dataset_ref}.${google_bigquery_table.events.table_id}"
  names = {
    completions_webhook = "${var.prefix}-completions-webhook"
    dead_letter         = "${var.prefix}-dead-letter"
    event_handler       = "${var.prefix}-event-handler"
    object_events       = "${var.prefix}-object-events"
    push                = "${var.prefix}-push"
    reconcile           = "${var.prefix}-reconcile"
    registry            = "${var.prefix}-registry"
    run_completions     = "${var.prefix}-run-completions"
  }
  # The cloudfunctions.net URL of a 2nd gen function is known before the function exists: the
  # registry needs its own URL (the audience writers' tokens carry), the event handler needs it to
  # call the registry, and neither can wait for the other's `url` attribute.
  registry_url = "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.names.registry}"
  runs_table   = "${local.dataset_ref}.${google_bigquery_table.runs.table_id}"
  # Google-managed service agents, built from the project number: the google provider has no data
  # source for them (google_project_service_identity exists only in google-beta).
  service_agents = {
    pubsub    = "serviceAccount:service-${data.google_project.project.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
    scheduler = "serviceAccount:service-${data.google_project.project.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
  }
}

data "google_project" "project" {
  project_id = var.project_id
  depends_on = [google_project_service.enabled]
}
