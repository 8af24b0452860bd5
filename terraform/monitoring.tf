# Alerting and a dashboard (monitoring.enabled, on by default). Each alert's documentation says what
# it means and links its section of docs/operations.md, the runbook.
#
# Runs failed and stalled are counted from the event handler's structured log lines: Cloud Run
# turns each JSON line the handler prints (tally_handler/app.py, `_log`) into a log entry whose
# jsonPayload holds its fields. tests/terraform/test_tf_monitoring.py checks every filter and
# extractor below against the fields and outcome values the code writes.

locals {
  monitoring = var.monitoring.enabled ? 1 : 0
  # Every line the event handler logs for a delivery (its component is fixed in `_log`).
  handler_log_filter = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.names.event_handler}\" AND jsonPayload.component=\"event-handler\""
  dead_letter_subscriptions = concat(
    [google_pubsub_subscription.dead_letter.name],
    google_pubsub_subscription.completions_webhook_dead_letter[*].name,
  )
  runbook = "docs/operations.md in the tally repository"
  # Metric types of the log-based metrics, for the alert conditions and the dashboard.
  log_metric_types = {
    deliveries           = "logging.googleapis.com/user/${var.prefix}-deliveries"
    delivery_storage_ops = "logging.googleapis.com/user/${var.prefix}-delivery-storage-operations"
    runs_failed          = "logging.googleapis.com/user/${var.prefix}-runs-failed"
    runs_stalled         = "logging.googleapis.com/user/${var.prefix}-runs-stalled"
    completion_latency   = "logging.googleapis.com/user/${var.prefix}-completion-latency"
  }
}

# --- log-based metrics ----------------------------------------------------------------------------

resource "google_logging_metric" "deliveries" {
  count       = local.monitoring
  project     = var.project_id
  name        = "${var.prefix}-deliveries"
  description = "tally: deliveries the event handler logged, by outcome and workflow."
  filter      = "${local.handler_log_filter} AND jsonPayload.outcome:*"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "outcome"
      value_type = "STRING"
    }
    labels {
      key        = "workflow"
      value_type = "STRING"
    }
  }
  label_extractors = {
    outcome  = "EXTRACT(jsonPayload.outcome)"
    workflow = "EXTRACT(jsonPayload.workflow)"
  }
}

resource "google_logging_metric" "delivery_storage_ops" {
  count       = local.monitoring
  project     = var.project_id
  name        = "${var.prefix}-delivery-storage-operations"
  description = "tally: Storage requests (reads, lists, writes) per delivery of an object event."
  filter      = "${local.handler_log_filter} AND jsonPayload.storage_operations:*"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
  }
  value_extractor = "EXTRACT(jsonPayload.storage_operations)"
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 16
      growth_factor      = 2
      scale              = 1
    }
  }
}

resource "google_logging_metric" "completion_latency" {
  count       = local.monitoring
  project     = var.project_id
  name        = "${var.prefix}-completion-latency"
  description = "tally: seconds from a run's first output to the claim of its announcement (each revision)."
  filter      = "${local.handler_log_filter} AND jsonPayload.completion_seconds:*"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
  }
  value_extractor = "EXTRACT(jsonPayload.completion_seconds)"
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20
      growth_factor      = 2
      scale              = 0.1
    }
  }
}

resource "google_logging_metric" "runs_failed" {
  count       = local.monitoring
  project     = var.project_id
  name        = "${var.prefix}-runs-failed"
  description = "tally: runs announced FAILED (the workflow wrote the failure marker), by workflow."
  filter      = "${local.handler_log_filter} AND jsonPayload.outcome=\"failed\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "workflow"
      value_type = "STRING"
    }
  }
  label_extractors = {
    workflow = "EXTRACT(jsonPayload.workflow)"
  }
}

resource "google_logging_metric" "runs_stalled" {
  count       = local.monitoring
  project     = var.project_id
  name        = "${var.prefix}-runs-stalled"
  description = "tally: runs reconciliation found past their spec's deadline and not announced, by workflow."
  filter      = "${local.handler_log_filter} AND jsonPayload.outcome=\"stalled\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key        = "workflow"
      value_type = "STRING"
    }
  }
  label_extractors = {
    workflow = "EXTRACT(jsonPayload.workflow)"
  }
}

# --- alert policies -------------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "dead_letters" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "tally: dead letters waiting"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels
  conditions {
    display_name = "undelivered messages in a dead-letter subscription"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.labels.subscription_id = one_of(${join(", ", [for s in local.dead_letter_subscriptions : "\"${s}\""])})"
      comparison      = "COMPARISON_GT"
      threshold_value = var.monitoring.dead_letter_messages
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    subject   = "tally: messages are waiting in a dead-letter subscription"
    content   = "Object events the event handler did not acknowledge after every attempt (or completions the webhook refused) are waiting in $${resource.label.subscription_id}. Their runs may be unannounced. Find the cause (`tally query dead_lettered`), fix it, then `tally replay`. Runbook: ${local.runbook}, section \"Alert: dead letters waiting\"."
  }
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "tally: object events waiting too long"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels
  conditions {
    display_name = "oldest unacknowledged object event"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.event_handler.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.monitoring.oldest_unacked_age_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    subject   = "tally: object events wait longer than ${var.monitoring.oldest_unacked_age_seconds} s for the event handler"
    content   = "The oldest unacknowledged message of ${google_pubsub_subscription.event_handler.name} is older than ${var.monitoring.oldest_unacked_age_seconds} s: the event handler is failing (deferred deliveries, 5xx), too slow, or at its instance limit, and announcements are late. Runbook: ${local.runbook}, section \"Alert: object events waiting\"."
  }
}

resource "google_monitoring_alert_policy" "handler_5xx" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "tally: event handler answers 5xx"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels
  conditions {
    display_name = "share of event handler requests answered 5xx"
    condition_threshold {
      filter                  = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${local.names.event_handler}\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\""
      denominator_filter      = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${local.names.event_handler}\" AND metric.type = \"run.googleapis.com/request_count\""
      comparison              = "COMPARISON_GT"
      threshold_value         = var.monitoring.handler_5xx_ratio
      duration                = "600s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    subject   = "tally: the event handler answers 5xx to more than ${var.monitoring.handler_5xx_ratio * 100}% of deliveries"
    content   = "503 means a delivery was deferred (registry, Storage, Pub/Sub or BigQuery failed; Pub/Sub retries it), 500 a crash. Sustained, messages reach the dead-letter topic. Runbook: ${local.runbook}, section \"Alert: event handler answers 5xx\"."
  }
}

resource "google_monitoring_alert_policy" "registry_5xx" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "tally: registry answers 5xx"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels
  conditions {
    display_name = "share of registry requests answered 5xx"
    condition_threshold {
      filter                  = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${local.names.registry}\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\""
      denominator_filter      = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${local.names.registry}\" AND metric.type = \"run.googleapis.com/request_count\""
      comparison              = "COMPARISON_GT"
      threshold_value         = var.monitoring.registry_5xx_ratio
      duration                = "600s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    subject   = "tally: the registry answers 5xx to more than ${var.monitoring.registry_5xx_ratio * 100}% of requests"
    content   = "The event handler cannot read specs (its deliveries are deferred) and registrations fail. Runbook: ${local.runbook}, section \"Alert: registry answers 5xx\"."
  }
}

resource "google_monitoring_alert_policy" "runs_failed" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "tally: runs failed"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels
  conditions {
    display_name = "runs announced FAILED in an hour"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"${local.log_metric_types.runs_failed}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.monitoring.runs_failed_per_hour
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.workflow"]
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    subject   = "tally: runs of $${metric.label.workflow} were announced FAILED"
    content   = "A workflow wrote its failure marker; tally announced the run FAILED with the marker's content as the reason. Runbook: ${local.runbook}, section \"Alert: runs failed\"."
  }
  depends_on = [google_logging_metric.runs_failed]
}

resource "google_monitoring_alert_policy" "runs_stalled" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "tally: runs stalled"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels
  conditions {
    display_name = "runs past their deadline, not announced, in an hour"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"${local.log_metric_types.runs_stalled}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.monitoring.runs_stalled_per_hour
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.workflow"]
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    subject   = "tally: runs of $${metric.label.workflow} stalled"
    content   = "Reconciliation found runs past their spec's deadline_minutes with required outputs missing. `tally runs --stalled` lists them, `tally status` shows what is missing. Runbook: ${local.runbook}, section \"Alert: runs stalled\"."
  }
  depends_on = [google_logging_metric.runs_stalled]
}

# --- dashboard ------------------------------------------------------------------------------------

locals {
  dashboard_charts = [
    {
      title   = "Deliveries by outcome (per minute)"
      filter  = "metric.type=\"${local.log_metric_types.deliveries}\" resource.type=\"cloud_run_revision\""
      aligner = "ALIGN_RATE", reducer = "REDUCE_SUM", group_by = ["metric.label.outcome"]
    },
    {
      title   = "Event handler time per delivery, p99 (ms)"
      filter  = "metric.type=\"run.googleapis.com/request_latencies\" resource.type=\"cloud_run_revision\" resource.label.service_name=\"${local.names.event_handler}\""
      aligner = "ALIGN_PERCENTILE_99", reducer = "REDUCE_MAX", group_by = []
    },
    {
      title   = "Storage operations per delivery, p99"
      filter  = "metric.type=\"${local.log_metric_types.delivery_storage_ops}\" resource.type=\"cloud_run_revision\""
      aligner = "ALIGN_PERCENTILE_99", reducer = "REDUCE_MAX", group_by = []
    },
    {
      title   = "Completion latency, p50 and p99 (s)"
      filter  = "metric.type=\"${local.log_metric_types.completion_latency}\" resource.type=\"cloud_run_revision\""
      aligner = "ALIGN_PERCENTILE_99", reducer = "REDUCE_MAX", group_by = []
    },
    {
      title   = "Dead letters waiting"
      filter  = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=one_of(${join(", ", [for s in local.dead_letter_subscriptions : "\"${s}\""])})"
      aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = ["resource.label.subscription_id"]
    },
    {
      title   = "Oldest unacknowledged object event (s)"
      filter  = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" resource.type=\"pubsub_subscription\" resource.label.subscription_id=\"${google_pubsub_subscription.event_handler.name}\""
      aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = []
    },
    {
      title   = "Instances by function"
      filter  = "metric.type=\"run.googleapis.com/container/instance_count\" resource.type=\"cloud_run_revision\" resource.label.service_name=one_of(\"${local.names.event_handler}\", \"${local.names.registry}\")"
      aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = ["resource.label.service_name"]
    },
  ]
}

resource "google_monitoring_dashboard" "tally" {
  count   = local.monitoring
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "tally (${var.prefix})"
    mosaicLayout = {
      columns = 12
      tiles = concat(
        [
          for i, chart in local.dashboard_charts : {
            xPos   = (i % 2) * 6
            yPos   = floor(i / 2) * 4
            width  = 6
            height = 4
            widget = {
              title = chart.title
              xyChart = {
                dataSets = [{
                  plotType = "LINE"
                  timeSeriesQuery = {
                    timeSeriesFilter = {
                      filter = chart.filter
                      aggregation = {
                        alignmentPeriod    = "60s"
                        perSeriesAligner   = chart.aligner
                        crossSeriesReducer = chart.reducer
                        groupByFields      = chart.group_by
                      }
                    }
                  }
                }]
              }
            }
          }
        ],
        [{
          xPos   = 0
          yPos   = ceil(length(local.dashboard_charts) / 2) * 4
          width  = 12
          height = 2
          widget = {
            title = "Completion latency in BigQuery"
            text = {
              format  = "MARKDOWN"
              content = "Time from a run's first output to its announcement is in BigQuery: view `${local.dataset_ref}.completion_latency` (p50/p90/p99 per day and workflow), `tally query slowest_runs`. Runbook: ${local.runbook}."
            }
          }
        }],
      )
    }
  })
}
