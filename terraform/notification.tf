# Storage publishes a JSON_API_V1 notification to the object-events topic for every object event
# of the outputs bucket. Storage publishes as its service agent, which must be allowed to publish
# before the notification is created: the API checks it and refuses the notification otherwise.

data "google_storage_project_service_account" "storage" {
  project    = var.project_id
  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic_iam_member" "storage_agent_object_events" {
  project = var.project_id
  topic   = google_pubsub_topic.object_events.name
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.storage.member
}

resource "google_storage_notification" "outputs" {
  bucket             = google_storage_bucket.outputs.name
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.object_events.id
  event_types        = var.notification.event_types
  object_name_prefix = var.notification.object_name_prefix
  depends_on         = [google_pubsub_topic_iam_member.storage_agent_object_events]
}
