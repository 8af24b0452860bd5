# Topics and subscriptions. The event handler is fed by a push subscription this module owns
# rather than by an Eventarc trigger, because the subscription Eventarc manages cannot carry a
# dead-letter policy, and the handler reads the push envelope itself (deliveryAttempt,
# subscription) to log every delivery.

locals {
  # Pub/Sub redelivers a message whose acknowledgement deadline passes: it must cover the handler's
  # whole timeout, or a slow delivery would run twice at once.
  event_ack_deadline_seconds = coalesce(
    var.event_subscription.ack_deadline_seconds, var.event_handler.timeout_seconds
  )
  # The reserved workflow of `tally check` (tally_cli/check.py, CHECK_WORKFLOW).
  check_workflow = "tally-check"
}

resource "google_pubsub_topic" "object_events" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; messages carry object names and reconcile requests, no workflow data.
  project    = var.project_id
  name       = local.names.object_events
  labels     = var.labels
  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "run_completions" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; messages carry run manifests (object names and hashes), no workflow data.
  project    = var.project_id
  name       = local.names.run_completions
  labels     = var.labels
  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; dead letters are object-events messages.
  project    = var.project_id
  name       = local.names.dead_letter
  labels     = var.labels
  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "event_handler" {
  project                    = var.project_id
  name                       = local.names.event_handler
  topic                      = google_pubsub_topic.object_events.id
  ack_deadline_seconds       = local.event_ack_deadline_seconds
  message_retention_duration = "${var.event_subscription.message_retention_seconds}s"
  labels                     = var.labels
  # The default expires a subscription after 31 days without messages: a quiet bucket would
  # silently lose its subscription.
  expiration_policy {
    ttl = ""
  }
  retry_policy {
    minimum_backoff = "${var.event_subscription.minimum_backoff_seconds}s"
    maximum_backoff = "${var.event_subscription.maximum_backoff_seconds}s"
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.event_subscription.max_delivery_attempts
  }
  # The Cloud Run service's own run.app URI: with ingress ALLOW_INTERNAL_ONLY, a push from this
  # project is internal traffic for that URL; the cloudfunctions.net URL does not get it.
  push_config {
    push_endpoint = google_cloudfunctions2_function.event_handler.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.event_handler.service_config[0].uri
    }
  }
  lifecycle {
    precondition {
      condition     = local.event_ack_deadline_seconds >= var.event_handler.timeout_seconds
      error_message = "event_subscription.ack_deadline_seconds must be at least event_handler.timeout_seconds: Pub/Sub would redeliver a message the handler is still working on."
    }
  }
  # Without these grants the first deliveries would fail (no token, no invoker, no dead-lettering).
  depends_on = [
    google_cloud_run_v2_service_iam_member.event_handler_push,
    google_pubsub_topic_iam_member.pubsub_agent_dead_letter,
    google_service_account_iam_member.pubsub_agent_push_token,
  ]
}

# Dead letters wait here to be inspected and replayed (republished to object-events).
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = local.names.dead_letter
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  # Acknowledged dead letters stay for the retention period, so a replay can seek back to them.
  retain_acked_messages = true
  labels                = var.labels
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "completions_webhook" {
  count                      = var.completions_webhook == null ? 0 : 1
  project                    = var.project_id
  name                       = local.names.completions_webhook
  topic                      = google_pubsub_topic.run_completions.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = var.labels
  expiration_policy {
    ttl = ""
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
  # Without it, completions the receiver keeps refusing would expire silently after 7 days.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.completions_webhook_dead_letter[0].id
    max_delivery_attempts = var.completions_webhook.max_delivery_attempts
  }
  # The receiver verifies the token: issuer Google, this email, this audience.
  push_config {
    push_endpoint = var.completions_webhook.url
    oidc_token {
      service_account_email = google_service_account.completions_webhook_push[0].email
      audience              = coalesce(var.completions_webhook.audience, var.completions_webhook.url)
    }
  }
  depends_on = [
    google_pubsub_topic_iam_member.pubsub_agent_webhook_dead_letter,
    google_service_account_iam_member.pubsub_agent_webhook_token,
  ]
}

resource "google_pubsub_topic" "completions_webhook_dead_letter" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; dead letters are completion messages (object names and hashes).
  count      = var.completions_webhook == null ? 0 : 1
  project    = var.project_id
  name       = local.names.completions_webhook_dead_letter
  labels     = var.labels
  depends_on = [google_project_service.enabled]
}

# Completions the webhook refused max_delivery_attempts times wait here (monitoring.tf alerts).
resource "google_pubsub_subscription" "completions_webhook_dead_letter" {
  count                      = var.completions_webhook == null ? 0 : 1
  project                    = var.project_id
  name                       = local.names.completions_webhook_dead_letter
  topic                      = google_pubsub_topic.completions_webhook_dead_letter[0].id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  labels                     = var.labels
  expiration_policy {
    ttl = ""
  }
}

# `tally check` waits here for the announcement of its own run (workflow tally-check): the filter
# keeps every other completion out, so the subscription holds nothing between checks.
resource "google_pubsub_subscription" "check" {
  count                      = var.check_subscription ? 1 : 0
  project                    = var.project_id
  name                       = local.names.check
  topic                      = google_pubsub_topic.run_completions.id
  ack_deadline_seconds       = 60
  message_retention_duration = "3600s"
  filter                     = "attributes.workflow = \"${local.check_workflow}\""
  labels                     = var.labels
  expiration_policy {
    ttl = ""
  }
}
