# The event log. The table schemas are the JSON files the event handler itself reads, so the
# tables Terraform creates are the ones the code writes to.

locals {
  partition_expiration_ms = (
    var.bigquery.partition_expiration_days == null
    ? null
    : var.bigquery.partition_expiration_days * 24 * 60 * 60 * 1000
  )
  views_dir = "${path.module}/../bigquery/views"
  # bigquery/views/<view>.sql, where `${dataset}` stands for project.dataset.
  views = {
    for f in fileset(local.views_dir, "*.sql") :
    trimsuffix(f, ".sql") => replace(file("${local.views_dir}/${f}"), "$${dataset}", local.dataset_ref)
  }
}

resource "google_bigquery_dataset" "tally" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; the event log holds object names and counters, no workflow data.
  project     = var.project_id
  dataset_id  = var.bigquery.dataset_id
  location    = coalesce(var.bigquery.location, var.region)
  description = "tally: every delivery of an object event (events) and every announced run (runs)."
  labels      = var.labels
  depends_on  = [google_project_service.enabled]
}

resource "google_bigquery_table" "events" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption; see the dataset.
  # checkov:skip=CKV_GCP_121: deletion protection is bigquery.deletion_protection, true unless a user turns it off (checkov cannot read optional() defaults).
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.tally.dataset_id
  table_id            = "events"
  description         = "One row per delivery of an object event, with its outcome."
  schema              = file("${path.module}/../functions/event_handler/schemas/events.json")
  clustering          = ["workflow", "version", "run_id"]
  deletion_protection = var.bigquery.deletion_protection
  labels              = var.labels
  time_partitioning {
    type          = "DAY"
    field         = "received_time"
    expiration_ms = local.partition_expiration_ms
  }
}

resource "google_bigquery_table" "runs" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption; see the dataset.
  # checkov:skip=CKV_GCP_121: deletion protection is bigquery.deletion_protection, true unless a user turns it off (checkov cannot read optional() defaults).
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.tally.dataset_id
  table_id            = "runs"
  description         = "One row per announced run (COMPLETE or FAILED)."
  schema              = file("${path.module}/../functions/event_handler/schemas/runs.json")
  clustering          = ["workflow", "version", "run_id"]
  deletion_protection = var.bigquery.deletion_protection
  labels              = var.labels
  time_partitioning {
    type          = "DAY"
    field         = "announced_time"
    expiration_ms = local.partition_expiration_ms
  }
}

resource "google_bigquery_table" "views" {
  # checkov:skip=CKV_GCP_80: a view stores no data to encrypt.
  # checkov:skip=CKV_GCP_121: a view holds no data and is recreated from bigquery/views/*.sql.
  for_each            = local.views
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.tally.dataset_id
  table_id            = each.key
  description         = "View defined in bigquery/views/${each.key}.sql."
  deletion_protection = false
  labels              = var.labels
  view {
    query          = each.value
    use_legacy_sql = false
  }
  # A view is validated against the tables it reads when it is created.
  depends_on = [google_bigquery_table.events, google_bigquery_table.runs]
}
