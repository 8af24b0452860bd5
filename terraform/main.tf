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
    build                           = "${var.prefix}-build"
    check                           = "${var.prefix}-check"
    completions_webhook             = "${var.prefix}-completions-webhook"
    completions_webhook_dead_letter = "${var.prefix}-completions-webhook-dead-letter"
    completions_webhook_push        = "${var.prefix}-webhook-push"
    dead_letter                     = "${var.prefix}-dead-letter"
    event_handler                   = "${var.prefix}-event-handler"
    object_events                   = "${var.prefix}-object-events"
    push                            = "${var.prefix}-push"
    reconcile                       = "${var.prefix}-reconcile"
    reconcile_every_run             = "${var.prefix}-reconcile-every-run"
    registry                        = "${var.prefix}-registry"
    run_completions                 = "${var.prefix}-run-completions"
  }
  # The cloudfunctions.net URL of a 2nd gen function is known before the function exists: the
  # registry needs its own URL (the audience writers' tokens carry), the event handler needs it to
  # call the registry, and neither can wait for the other's `url` attribute. A postcondition on
  # the registry function checks the prediction against the real URL.
  registry_url = "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.names.registry}"
  runs_table   = "${local.dataset_ref}.${google_bigquery_table.runs.table_id}"
  # Google-managed service agents. generateServiceIdentity creates an agent that does not exist
  # yet and returns its email, so the grants to it succeed in the first apply (an address built
  # from the project number names an agent that may not exist until its API has been used).
  service_agents = {
    pubsub    = google_project_service_identity.pubsub.member
    scheduler = google_project_service_identity.scheduler.member
  }
}

resource "google_project_service_identity" "pubsub" {
  provider   = google-beta
  project    = var.project_id
  service    = "pubsub.googleapis.com"
  depends_on = [google_project_service.enabled]
}

resource "google_project_service_identity" "scheduler" {
  provider   = google-beta
  project    = var.project_id
  service    = "cloudscheduler.googleapis.com"
  depends_on = [google_project_service.enabled]
}
