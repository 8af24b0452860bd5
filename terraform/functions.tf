# Both functions are Cloud Functions 2nd gen built from their directory in this repository. The
# archive's object is named after its MD5, so a source change uploads a new object and redeploys.

locals {
  function_dirs = {
    event-handler = "${path.module}/../functions/event_handler"
    registry      = "${path.module}/../functions/registry"
  }
  # Never deployed: tests, bytecode and caches, virtualenvs, local settings.
  function_source_excludes = [
    "**/.env",
    "**/.env.*",
    "**/.pytest_cache",
    "**/.venv",
    "**/__pycache__",
    "**/*.local",
    "**/*.pyc",
    "**/test_*.py",
    "**/tests",
  ]
  # Cloud Build runs both builds as this account: the module's own (google_service_account.build,
  # iam.tf) unless build_service_account names one the user manages. Left unset, new projects
  # build as the Compute Engine default account, which often lacks the roles (or does not exist).
  build_service_account_email = (
    var.build_service_account == null
    ? google_service_account.build[0].email
    : var.build_service_account
  )
  build_service_account = "projects/${var.project_id}/serviceAccounts/${local.build_service_account_email}"
  # Shared by the event handler and the registry: the registry refuses specs that collide with
  # what tally writes in run folders, so both must read the same values.
  run_folder = {
    failure_marker = var.event_handler.failure_marker
    layout         = var.event_handler.layout
    manifest_name  = var.event_handler.manifest_name
  }
}

data "archive_file" "function_sources" {
  for_each    = local.function_dirs
  type        = "zip"
  source_dir  = each.value
  output_path = "${path.module}/.build/${each.key}.zip"
  excludes    = local.function_source_excludes
  # The checkout's umask must not change the archive's hash.
  output_file_mode = "0644"
}

resource "google_storage_bucket_object" "function_sources" {
  for_each = local.function_dirs
  bucket   = google_storage_bucket.sources.name
  name     = "${each.key}/${data.archive_file.function_sources[each.key].output_md5}.zip"
  source   = data.archive_file.function_sources[each.key].output_path
}

resource "google_cloudfunctions2_function" "event_handler" {
  project     = var.project_id
  location    = var.region
  name        = local.names.event_handler
  description = "tally event handler: decides run completeness from Storage events pushed by Pub/Sub."
  labels      = var.labels
  build_config {
    runtime         = var.runtime
    entry_point     = "handle"
    service_account = local.build_service_account
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_sources["event-handler"].name
      }
    }
  }
  # No event_trigger: the push subscription in pubsub.tf calls the function over HTTP.
  service_config {
    available_cpu                    = var.event_handler.available_cpu
    available_memory                 = "${var.event_handler.memory_mib}Mi"
    timeout_seconds                  = var.event_handler.timeout_seconds
    min_instance_count               = var.event_handler.min_instance_count
    max_instance_count               = var.event_handler.max_instance_count
    max_instance_request_concurrency = var.event_handler.max_instance_request_concurrency
    # Pushes from a subscription in the same project count as internal traffic for Cloud Run.
    ingress_settings               = var.event_handler.ingress_settings
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.event_handler.email
    # Exactly the variables the code reads (tests/terraform checks them against the code and
    # docs/design.md).
    environment_variables = {
      TALLY_CLAIM_LEASE_SECONDS    = var.event_handler.claim_lease_seconds
      TALLY_COMPLETIONS_TOPIC      = google_pubsub_topic.run_completions.name
      TALLY_EVENTS_TABLE           = local.events_table
      TALLY_FAILURE_MARKER         = local.run_folder.failure_marker
      TALLY_LAYOUT                 = local.run_folder.layout
      TALLY_MANIFEST_NAME          = local.run_folder.manifest_name
      TALLY_MAX_DELIVERY_ATTEMPTS  = var.event_subscription.max_delivery_attempts
      TALLY_OBJECT_EVENTS_TOPIC    = google_pubsub_topic.object_events.name
      TALLY_OUTPUTS_BUCKET         = google_storage_bucket.outputs.name
      TALLY_PRESENCE_CACHE_RUNS    = var.event_handler.presence_cache_runs
      TALLY_PROJECT                = var.project_id
      TALLY_RECONCILE_MAX_RUNS     = var.event_handler.reconcile_max_runs
      TALLY_REVISION_QUIET_SECONDS = var.event_handler.revision_quiet_seconds
      TALLY_REGISTRY_AUTH          = "id-token"
      TALLY_REGISTRY_URL           = local.registry_url
      TALLY_RUNS_TABLE             = local.runs_table
    }
  }
  # The build needs its roles before it starts.
  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_sources,
  ]
}

resource "google_cloudfunctions2_function" "registry" {
  project     = var.project_id
  location    = var.region
  name        = local.names.registry
  description = "tally registry: the expected outputs of each workflow version, over HTTP."
  labels      = var.labels
  build_config {
    runtime         = var.runtime
    entry_point     = "handle"
    service_account = local.build_service_account
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_sources["registry"].name
      }
    }
  }
  service_config {
    available_cpu                    = var.registry.available_cpu
    available_memory                 = "${var.registry.memory_mib}Mi"
    timeout_seconds                  = var.registry.timeout_seconds
    min_instance_count               = var.registry.min_instance_count
    max_instance_count               = var.registry.max_instance_count
    max_instance_request_concurrency = var.registry.max_instance_request_concurrency
    # The event handler calls the registry over the internet (no VPC connector): IAM, not
    # ingress, keeps it private.
    ingress_settings               = var.registry.ingress_settings
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.registry.email
    environment_variables = {
      TALLY_FAILURE_MARKER            = local.run_folder.failure_marker
      TALLY_LAYOUT                    = local.run_folder.layout
      TALLY_MANIFEST_NAME             = local.run_folder.manifest_name
      TALLY_OBJECT_EVENTS_TOPIC       = google_pubsub_topic.object_events.name
      TALLY_PROJECT                   = var.project_id
      TALLY_REGISTRY_AUDIENCE         = local.registry_url
      TALLY_REGISTRY_BUCKET           = google_storage_bucket.registry.name
      TALLY_REGISTRY_CERTS_URL        = var.registry.certs_url
      TALLY_REGISTRY_LIST_TTL_SECONDS = var.registry.list_ttl_seconds
      TALLY_REGISTRY_WRITERS          = join(",", var.registry.writers)
    }
  }
  lifecycle {
    precondition {
      condition     = length(local.edited_specs) == 0
      error_message = "Registered workflow versions are immutable, but these files under workflows/ differ from the registered specs: ${join(", ", local.edited_specs)}. Revert them, and write the change as a new version file (workflows/<workflow>/<new version>.json)."
    }
    # The handler and writers' tokens use the predicted URL (local.registry_url).
    postcondition {
      condition     = self.url == local.registry_url
      error_message = "The registry's URL is ${self.url}, not the predicted ${local.registry_url}: the event handler (TALLY_REGISTRY_URL) and the writers' token audience use the prediction. Report this as a tally bug."
    }
  }
  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_sources,
  ]
}
