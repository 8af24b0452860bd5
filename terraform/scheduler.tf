# Reconciliation: a reconcile request on the object-events topic every N minutes makes the event
# handler examine the runs that may be open (tally's open-run index: a crash between claim and
# announcement, a change not yet re-announced, stalled runs). A second, rarer request walks every
# run folder (`all=true`): the only way to find a run none of whose notifications ever arrived.
# Both travel the same path as object events, so they get the same retries and dead-lettering.

locals {
  reconcile_schedule = (
    var.reconcile_interval_minutes == null ? null
    : var.reconcile_interval_minutes < 60 ? "*/${var.reconcile_interval_minutes} * * * *"
    : "0 */${floor(var.reconcile_interval_minutes / 60)} * * *"
  )
}

# A pubsub_target job publishes as the Cloud Scheduler service agent.
resource "google_pubsub_topic_iam_member" "scheduler_agent_object_events" {
  count   = var.reconcile_interval_minutes == null && var.reconcile_every_run_schedule == null ? 0 : 1
  project = var.project_id
  topic   = google_pubsub_topic.object_events.name
  role    = "roles/pubsub.publisher"
  member  = local.service_agents.scheduler
}

resource "google_cloud_scheduler_job" "reconcile" {
  count       = var.reconcile_interval_minutes == null ? 0 : 1
  project     = var.project_id
  region      = var.region
  name        = local.names.reconcile
  description = "Publishes a tally reconcile request every ${coalesce(var.reconcile_interval_minutes, 0)} minutes."
  schedule    = local.reconcile_schedule
  time_zone   = "Etc/UTC"
  pubsub_target {
    topic_name = google_pubsub_topic.object_events.id
    data       = base64encode("{}")
    attributes = {
      "tally-request" = "reconcile"
    }
  }
  depends_on = [
    google_project_service.enabled,
    google_pubsub_topic_iam_member.scheduler_agent_object_events,
  ]
}

resource "google_cloud_scheduler_job" "reconcile_every_run" {
  count       = var.reconcile_every_run_schedule == null ? 0 : 1
  project     = var.project_id
  region      = var.region
  name        = local.names.reconcile_every_run
  description = "Publishes a tally reconcile request that walks every run folder (${coalesce(var.reconcile_every_run_schedule, "-")})."
  schedule    = var.reconcile_every_run_schedule
  time_zone   = "Etc/UTC"
  pubsub_target {
    topic_name = google_pubsub_topic.object_events.id
    data       = base64encode("{}")
    attributes = {
      "tally-request" = "reconcile"
      "all"           = "true"
    }
  }
  depends_on = [
    google_project_service.enabled,
    google_pubsub_topic_iam_member.scheduler_agent_object_events,
  ]
}
