output "bigquery_dataset_id" {
  description = "BigQuery dataset of the event log (project.dataset)."
  value       = "${var.project_id}.${google_bigquery_dataset.tally.dataset_id}"
}

output "build_service_account_email" {
  description = "Service account Cloud Build builds both functions as."
  value       = local.build_service_account_email
}

output "check_subscription_id" {
  description = "Pull subscription `tally check` waits on for its own announcements; null when check_subscription is false."
  value       = try(google_pubsub_subscription.check[0].id, null)
}

output "dead_letter_subscription_id" {
  description = "Pull subscription holding the dead letters, to inspect and replay them."
  value       = google_pubsub_subscription.dead_letter.id
}

output "dead_letter_topic_id" {
  description = "Topic receiving the object-events messages the event handler failed to process."
  value       = google_pubsub_topic.dead_letter.id
}

output "event_handler_service_account_email" {
  description = "Service account the event handler runs as."
  value       = google_service_account.event_handler.email
}

output "event_handler_url" {
  description = "URL (run.app) the push subscription calls the event handler at; only the push service account may invoke it, from inside the project."
  value       = google_cloudfunctions2_function.event_handler.service_config[0].uri
}

output "event_subscription_id" {
  description = "Push subscription feeding the event handler."
  value       = google_pubsub_subscription.event_handler.id
  depends_on  = [google_pubsub_subscription_iam_member.pubsub_agent_event_handler]
}

output "events_table_id" {
  description = "Event log table, one row per delivery (project.dataset.table)."
  value       = local.events_table
}

output "example_bq_query" {
  description = "Command to paste in a shell: deliveries per outcome over the last day."
  value       = "bq query --project_id=${var.project_id} --use_legacy_sql=false 'SELECT outcome, COUNT(*) AS deliveries FROM `${local.events_table}` WHERE received_time > TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 DAY) GROUP BY outcome ORDER BY deliveries DESC'"
}

output "example_curl" {
  description = "Command to paste in a shell: the workflows the registry knows (the caller needs to be a registry invoker)."
  value       = "curl -sS -H \"Authorization: Bearer $(gcloud auth print-identity-token)\" ${google_cloudfunctions2_function.registry.url}/workflows"
}

output "object_events_topic_id" {
  description = "Topic receiving the outputs bucket's notifications and the reconcile requests."
  value       = google_pubsub_topic.object_events.id
}

output "outputs_bucket_name" {
  description = "Bucket the workflows write their runs to ({workflow}/{version}/{run_id}/...)."
  value       = google_storage_bucket.outputs.name
}

output "push_service_account_email" {
  description = "Service account in the OIDC token of the pushes to the event handler."
  value       = google_service_account.push.email
}

output "registry_bucket_name" {
  description = "Bucket holding the registry's specs (workflows/<workflow>/<version>.json)."
  value       = google_storage_bucket.registry.name
}

output "registry_service_account_email" {
  description = "Service account the registry runs as."
  value       = google_service_account.registry.email
}

output "registry_url" {
  description = "URL of the registry function."
  value       = google_cloudfunctions2_function.registry.url
  depends_on  = [google_cloud_run_v2_service_iam_member.registry_invokers]
}

output "run_completions_topic_id" {
  description = "Topic on which each run's completion is announced; subscribe consumers here."
  value       = google_pubsub_topic.run_completions.id
}

output "runs_table_id" {
  description = "Table of announced runs, one row per run (project.dataset.table)."
  value       = local.runs_table
}

output "sources_bucket_name" {
  description = "Bucket holding the function source archives."
  value       = google_storage_bucket.sources.name
}

output "view_ids" {
  description = "BigQuery views created from bigquery/views/*.sql, by name (project.dataset.view)."
  value       = { for k, v in google_bigquery_table.views : k => "${local.dataset_ref}.${v.table_id}" }
}

output "webhook_dead_letter_subscription_id" {
  description = "Pull subscription holding the completions the webhook refused; null without a webhook."
  value       = try(google_pubsub_subscription.completions_webhook_dead_letter[0].id, null)
}

output "webhook_push_service_account_email" {
  description = "Email in the OIDC token of the webhook pushes: the receiver accepts only this one; null without a webhook."
  value       = try(google_service_account.completions_webhook_push[0].email, null)
}

output "webhook_subscription_id" {
  description = "Push subscription delivering run completions to completions_webhook.url; null without a webhook."
  value       = try(google_pubsub_subscription.completions_webhook[0].id, null)
}
