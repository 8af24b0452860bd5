# One service account per function, one for their builds, and the identities Pub/Sub pushes with.
# Every grant is scoped to one resource (bucket, topic, subscription, table, function), except the
# build account's two project-level roles (see below).

locals {
  # Registry writers must also be allowed to call the registry. An email of a service account
  # becomes a serviceAccount: member, any other email a user: member.
  registry_invokers = distinct(concat(
    var.registry.invokers,
    [
      for w in var.registry.writers :
      endswith(w, ".gserviceaccount.com") ? "serviceAccount:${w}" : "user:${w}"
    ]
  ))
}

resource "google_service_account" "event_handler" {
  project      = var.project_id
  account_id   = local.names.event_handler
  display_name = "tally event handler"
  description  = "Runs the tally event handler function."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "registry" {
  project      = var.project_id
  account_id   = local.names.registry
  display_name = "tally registry"
  description  = "Runs the tally registry function."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "build" {
  count        = var.build_service_account == null ? 1 : 0
  project      = var.project_id
  account_id   = local.names.build
  display_name = "tally function builds"
  description  = "Cloud Build runs the builds of both tally functions as this account."
  depends_on   = [google_project_service.enabled]
}

# What Google's guidance gives a function build account: write its logs, push the image, read the
# source. Logs and Artifact Registry are project-level: the build writes to the `gcf-artifacts`
# repository, which Cloud Functions creates at the first deploy, so no grant on it can precede the
# first build.
resource "google_project_iam_member" "build" {
  for_each = var.build_service_account == null ? toset(["roles/artifactregistry.writer", "roles/logging.logWriter"]) : toset([])
  project  = var.project_id
  role     = each.value
  member   = google_service_account.build[0].member
}

resource "google_storage_bucket_iam_member" "build_sources" {
  count  = var.build_service_account == null ? 1 : 0
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build[0].member
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = local.names.push
  display_name = "tally push"
  description  = "Identity in the OIDC token of Pub/Sub pushes to the tally event handler."
  depends_on   = [google_project_service.enabled]
}

# Event handler: reads the run folders and creates (then overwrites) the manifest in them.
resource "google_storage_bucket_iam_member" "event_handler_outputs" {
  bucket = google_storage_bucket.outputs.name
  role   = "roles/storage.objectUser"
  member = google_service_account.event_handler.member
}

# Reconciliation queues its next page of runs as a message on object-events.
resource "google_pubsub_topic_iam_member" "event_handler_object_events" {
  project = var.project_id
  topic   = google_pubsub_topic.object_events.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.event_handler.member
}

resource "google_pubsub_topic_iam_member" "event_handler_run_completions" {
  project = var.project_id
  topic   = google_pubsub_topic.run_completions.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.event_handler.member
}

# Streaming inserts need no BigQuery job, hence no project-level jobUser role.
resource "google_bigquery_table_iam_member" "event_handler_tables" {
  for_each = {
    events = google_bigquery_table.events.table_id
    runs   = google_bigquery_table.runs.table_id
  }
  project    = var.project_id
  dataset_id = google_bigquery_dataset.tally.dataset_id
  table_id   = each.value
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.event_handler.member
}

# Registry: reads and registers specs in its own bucket only (create and read objects; no IAM or
# ACL administration, which objectAdmin would add).
resource "google_storage_bucket_iam_member" "registry_specs" {
  bucket = google_storage_bucket.registry.name
  role   = "roles/storage.objectUser"
  member = google_service_account.registry.member
}

# A registration queues a reconcile request for the new version's waiting runs.
resource "google_pubsub_topic_iam_member" "registry_object_events" {
  project = var.project_id
  topic   = google_pubsub_topic.object_events.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.registry.member
}

# Invokers. A 2nd gen function is a Cloud Run service of the same name: roles/run.invoker on that
# service is what authorizes a call (roles/cloudfunctions.invoker is for 1st gen).
resource "google_cloud_run_v2_service_iam_member" "event_handler_push" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.event_handler.name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

resource "google_cloud_run_v2_service_iam_member" "registry_event_handler" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.registry.name
  role     = "roles/run.invoker"
  member   = google_service_account.event_handler.member
}

resource "google_cloud_run_v2_service_iam_member" "registry_invokers" {
  for_each = toset(local.registry_invokers)
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.registry.name
  role     = "roles/run.invoker"
  member   = each.value
}

# Pub/Sub service agent: mints the push OIDC tokens, forwards dead letters, and acknowledges the
# forwarded messages on the source subscription.
resource "google_service_account_iam_member" "pubsub_agent_push_token" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.service_agents.pubsub
}

resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.service_agents.pubsub
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_event_handler" {
  project      = var.project_id
  subscription = google_pubsub_subscription.event_handler.name
  role         = "roles/pubsub.subscriber"
  member       = local.service_agents.pubsub
}

# Completions webhook: Pub/Sub pushes with an OIDC token of this account (the receiver verifies its
# email and the audience) and dead-letters what the receiver keeps refusing.
resource "google_service_account" "completions_webhook_push" {
  count        = var.completions_webhook == null ? 0 : 1
  project      = var.project_id
  account_id   = local.names.completions_webhook_push
  display_name = "tally completions webhook push"
  description  = "Identity in the OIDC token of Pub/Sub pushes of run completions to the webhook."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account_iam_member" "pubsub_agent_webhook_token" {
  count              = var.completions_webhook == null ? 0 : 1
  service_account_id = google_service_account.completions_webhook_push[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.service_agents.pubsub
}

resource "google_pubsub_topic_iam_member" "pubsub_agent_webhook_dead_letter" {
  count   = var.completions_webhook == null ? 0 : 1
  project = var.project_id
  topic   = google_pubsub_topic.completions_webhook_dead_letter[0].name
  role    = "roles/pubsub.publisher"
  member  = local.service_agents.pubsub
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_webhook" {
  count        = var.completions_webhook == null ? 0 : 1
  project      = var.project_id
  subscription = google_pubsub_subscription.completions_webhook[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.service_agents.pubsub
}
