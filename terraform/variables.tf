variable "bigquery" {
  description = "BigQuery dataset of the event log. The location defaults to the region; a null partition expiration keeps partitions forever."
  type = object({
    dataset_id                = optional(string, "tally")
    deletion_protection       = optional(bool, true)
    location                  = optional(string)
    partition_expiration_days = optional(number)
  })
  default  = {}
  nullable = false
  validation {
    # RE2 refuses repetition counts above 1000: the length is checked apart.
    condition     = length(var.bigquery.dataset_id) <= 1024 && can(regex("^[A-Za-z0-9_]+$", var.bigquery.dataset_id))
    error_message = "bigquery.dataset_id must be 1 to 1024 letters, digits or underscores."
  }
  validation {
    condition     = coalesce(var.bigquery.partition_expiration_days, 1) >= 1
    error_message = "bigquery.partition_expiration_days must be null (keep partitions forever) or at least 1."
  }
}

variable "build_service_account" {
  description = "Email of an existing service account Cloud Build uses to build both functions (you grant its roles); null creates a dedicated one with the roles Google's guidance lists."
  type        = string
  default     = null
  validation {
    condition     = var.build_service_account == null ? true : can(regex("^[^@\\s]+@[^@\\s]+\\.iam\\.gserviceaccount\\.com$", var.build_service_account))
    error_message = "build_service_account must be null or a service account email (NAME@PROJECT.iam.gserviceaccount.com)."
  }
}

variable "check_subscription" {
  description = "Create the pull subscription `tally check` waits on for its own announcements (filtered to the workflow tally-check)."
  type        = bool
  default     = true
  nullable    = false
}

variable "completions_webhook" {
  description = "HTTPS endpoint that receives every run completion as a Pub/Sub push with an OIDC token (audience: the URL unless set), and the deliveries after which a completion is dead-lettered; null creates no webhook subscription."
  type = object({
    audience              = optional(string)
    max_delivery_attempts = optional(number, 10)
    url                   = string
  })
  default = null
  validation {
    condition     = var.completions_webhook == null ? true : startswith(var.completions_webhook.url, "https://")
    error_message = "completions_webhook.url must be an https:// URL."
  }
  validation {
    condition     = var.completions_webhook == null ? true : contains(range(5, 101), var.completions_webhook.max_delivery_attempts)
    error_message = "completions_webhook.max_delivery_attempts must be between 5 and 100 (the range Pub/Sub accepts)."
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs tally needs; set to false when the project's APIs are managed elsewhere."
  type        = bool
  default     = true
  nullable    = false
}

variable "event_handler" {
  description = "Event handler function: resources, scaling, ingress and the run layout it reads (TALLY_LAYOUT and the other settings of docs/design.md)."
  type = object({
    available_cpu                    = optional(string, "1")
    claim_lease_seconds              = optional(number, 600)
    failure_marker                   = optional(string, "_FAILED")
    ingress_settings                 = optional(string, "ALLOW_INTERNAL_ONLY")
    layout                           = optional(string, "{workflow}/{version}/{run_id}/{path}")
    manifest_name                    = optional(string, "output.json")
    max_instance_count               = optional(number, 20)
    max_instance_request_concurrency = optional(number, 10)
    memory_mib                       = optional(number, 512)
    min_instance_count               = optional(number, 0)
    presence_cache_runs              = optional(number, 1000)
    reconcile_max_runs               = optional(number, 500)
    revision_quiet_seconds           = optional(number, 30)
    timeout_seconds                  = optional(number, 300)
  })
  default  = {}
  nullable = false
  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_INTERNAL_ONLY"], var.event_handler.ingress_settings)
    error_message = "event_handler.ingress_settings must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
  validation {
    condition     = alltrue([for p in ["{workflow}", "{version}", "{run_id}", "{path}"] : strcontains(var.event_handler.layout, p)])
    error_message = "event_handler.layout must contain {workflow}, {version}, {run_id} and {path}."
  }
  validation {
    # A push subscription waits at most 600 s for an answer.
    condition     = var.event_handler.timeout_seconds >= 10 ? var.event_handler.timeout_seconds <= 600 : false
    error_message = "event_handler.timeout_seconds must be between 10 and 600 (the longest Pub/Sub push acknowledgement deadline)."
  }
  validation {
    condition = alltrue([
      var.event_handler.memory_mib >= 128,
      var.event_handler.max_instance_count >= 1,
      var.event_handler.max_instance_request_concurrency >= 1,
    ])
    error_message = "event_handler.memory_mib must be at least 128, max_instance_count and max_instance_request_concurrency at least 1."
  }
  validation {
    # Cloud Run refuses more than one concurrent request per instance with less than one CPU.
    condition     = can(tonumber(var.event_handler.available_cpu)) ? (tonumber(var.event_handler.available_cpu) >= 1 || var.event_handler.max_instance_request_concurrency == 1) : false
    error_message = "event_handler.available_cpu must be a number of CPUs (\"0.5\", \"1\", \"2\"), and at least 1 when max_instance_request_concurrency is more than 1."
  }
  validation {
    condition     = var.event_handler.min_instance_count >= 0 ? var.event_handler.min_instance_count <= var.event_handler.max_instance_count : false
    error_message = "event_handler.min_instance_count must be between 0 and max_instance_count."
  }
  validation {
    condition = alltrue([
      var.event_handler.claim_lease_seconds >= 1,
      var.event_handler.presence_cache_runs >= 0,
      var.event_handler.reconcile_max_runs >= 1,
      var.event_handler.revision_quiet_seconds >= 0,
    ])
    error_message = "event_handler.claim_lease_seconds and reconcile_max_runs must be at least 1, presence_cache_runs (0 turns the cache off) and revision_quiet_seconds at least 0."
  }
}

variable "event_subscription" {
  description = "Push subscription that feeds the event handler: acknowledgement deadline (null: the handler's timeout), retries with backoff, dead-lettering and retention."
  type = object({
    ack_deadline_seconds      = optional(number)
    max_delivery_attempts     = optional(number, 5)
    maximum_backoff_seconds   = optional(number, 600)
    message_retention_seconds = optional(number, 604800)
    minimum_backoff_seconds   = optional(number, 10)
  })
  default  = {}
  nullable = false
  validation {
    condition     = contains(range(10, 601), coalesce(var.event_subscription.ack_deadline_seconds, 10))
    error_message = "event_subscription.ack_deadline_seconds must be null or between 10 and 600."
  }
  validation {
    condition     = contains(range(5, 101), var.event_subscription.max_delivery_attempts)
    error_message = "event_subscription.max_delivery_attempts must be between 5 and 100 (the range Pub/Sub accepts)."
  }
  validation {
    condition = alltrue([
      var.event_subscription.minimum_backoff_seconds >= 0,
      var.event_subscription.minimum_backoff_seconds <= var.event_subscription.maximum_backoff_seconds,
      var.event_subscription.maximum_backoff_seconds <= 600,
    ])
    error_message = "event_subscription backoffs must satisfy 0 <= minimum_backoff_seconds <= maximum_backoff_seconds <= 600."
  }
  validation {
    condition = alltrue([
      var.event_subscription.message_retention_seconds >= 600,
      var.event_subscription.message_retention_seconds <= 604800,
    ])
    error_message = "event_subscription.message_retention_seconds must be between 600 (10 minutes) and 604800 (7 days)."
  }
}

variable "labels" {
  description = "Labels set on every resource that takes labels."
  type        = map(string)
  default     = {}
  nullable    = false
  # Google's label rules: keys start with a lowercase letter; keys and values hold at most 63
  # lowercase letters, digits, underscores and hyphens; at most 64 labels.
  validation {
    condition     = length(var.labels) <= 64 && alltrue([for k, v in var.labels : can(regex("^\\p{Ll}[\\p{Ll}0-9_-]{0,62}$", k)) && can(regex("^[\\p{Ll}0-9_-]{0,63}$", v))])
    error_message = "labels: at most 64; keys must start with a lowercase letter, and keys and values hold at most 63 lowercase letters, digits, underscores or hyphens."
  }
}

variable "monitoring" {
  description = "Alert policies, log-based metrics and a dashboard (monitoring.tf). The notification channels (ids projects/P/notificationChannels/N) receive the alerts; an alert fires when its figure exceeds the threshold: dead letters waiting, the event subscription's oldest unacknowledged message age, the functions' 5xx share of requests, runs failed or stalled in an hour."
  type = object({
    dead_letter_messages       = optional(number, 0)
    enabled                    = optional(bool, true)
    handler_5xx_ratio          = optional(number, 0.05)
    notification_channels      = optional(list(string), [])
    oldest_unacked_age_seconds = optional(number, 1800)
    registry_5xx_ratio         = optional(number, 0.05)
    runs_failed_per_hour       = optional(number, 0)
    runs_stalled_per_hour      = optional(number, 0)
  })
  default  = {}
  nullable = false
  validation {
    condition     = alltrue([for c in var.monitoring.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "monitoring.notification_channels must be notification channel ids: projects/PROJECT/notificationChannels/ID."
  }
  validation {
    condition = alltrue([
      var.monitoring.dead_letter_messages >= 0,
      var.monitoring.oldest_unacked_age_seconds >= 60,
      var.monitoring.runs_failed_per_hour >= 0,
      var.monitoring.runs_stalled_per_hour >= 0,
      var.monitoring.handler_5xx_ratio > 0 && var.monitoring.handler_5xx_ratio <= 1,
      var.monitoring.registry_5xx_ratio > 0 && var.monitoring.registry_5xx_ratio <= 1,
    ])
    error_message = "monitoring thresholds: dead_letter_messages, runs_failed_per_hour and runs_stalled_per_hour at least 0, oldest_unacked_age_seconds at least 60, the 5xx ratios in (0, 1]."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object of the registry and sources buckets (both versioned) is kept as a noncurrent version before it is deleted."
  type        = number
  default     = 30
  nullable    = false
  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "notification" {
  description = "Storage notification of the outputs bucket: event types (OBJECT_FINALIZE by default) and an optional object name prefix."
  type = object({
    event_types        = optional(list(string), ["OBJECT_FINALIZE"])
    object_name_prefix = optional(string)
  })
  default  = {}
  nullable = false
  validation {
    condition = length(var.notification.event_types) == 0 ? false : alltrue([
      for t in var.notification.event_types :
      contains(["OBJECT_ARCHIVE", "OBJECT_DELETE", "OBJECT_FINALIZE", "OBJECT_METADATA_UPDATE"], t)
    ])
    error_message = "notification.event_types must be a non-empty list of OBJECT_FINALIZE, OBJECT_METADATA_UPDATE, OBJECT_DELETE, OBJECT_ARCHIVE."
  }
}

variable "outputs_bucket" {
  description = "Bucket the workflows write their runs to. The name defaults to PROJECT-PREFIX-outputs, the location to the region; a lifecycle age deletes objects older than that many days."
  type = object({
    force_destroy             = optional(bool, false)
    lifecycle_delete_age_days = optional(number)
    location                  = optional(string)
    name                      = optional(string)
    storage_class             = optional(string, "STANDARD")
    versioning                = optional(bool, false)
  })
  default  = {}
  nullable = false
  validation {
    condition     = coalesce(var.outputs_bucket.lifecycle_delete_age_days, 1) >= 1
    error_message = "outputs_bucket.lifecycle_delete_age_days must be null (keep objects) or at least 1."
  }
  validation {
    condition     = contains(["ARCHIVE", "COLDLINE", "NEARLINE", "STANDARD"], var.outputs_bucket.storage_class)
    error_message = "outputs_bucket.storage_class must be STANDARD, NEARLINE, COLDLINE or ARCHIVE."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (topics, subscriptions, functions, service accounts, buckets)."
  type        = string
  default     = "tally"
  nullable    = false
  validation {
    # "-event-handler" must still fit in a 30-character service account id.
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2 to 16 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "project_id" {
  description = "Project that holds every tally resource."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id: 6 to 30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "reconcile_every_run_schedule" {
  description = "Cron schedule (UTC) of the reconcile request that walks every run folder, finding runs none of whose notifications arrived; its cost grows with the runs in the bucket. null creates no job."
  type        = string
  default     = "17 3 * * *"
  validation {
    condition     = var.reconcile_every_run_schedule == null ? true : length(split(" ", trimspace(var.reconcile_every_run_schedule))) == 5
    error_message = "reconcile_every_run_schedule must be null or a five-field cron schedule, e.g. \"17 3 * * *\" (daily at 03:17 UTC)."
  }
}

variable "reconcile_interval_minutes" {
  description = "Minutes between two reconcile requests (the runs that may be open) published by Cloud Scheduler; null creates no scheduler job."
  type        = number
  default     = 60
  validation {
    condition     = var.reconcile_interval_minutes == null ? true : contains([1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440], var.reconcile_interval_minutes)
    error_message = "reconcile_interval_minutes must be null or one of 1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440 (intervals a cron schedule repeats evenly)."
  }
}

variable "region" {
  description = "Region of the functions, the scheduler job and (by default) the buckets and the dataset."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1 or us-central1."
  }
}

variable "registry" {
  description = "Registry function: resources, scaling, ingress, who may call it (IAM members), who may register versions (emails, TALLY_REGISTRY_WRITERS), and whether destroy deletes the registered specs (bucket_force_destroy)."
  type = object({
    available_cpu                    = optional(string, "1")
    bucket_force_destroy             = optional(bool, true)
    certs_url                        = optional(string, "https://www.googleapis.com/oauth2/v1/certs")
    ingress_settings                 = optional(string, "ALLOW_ALL")
    invokers                         = optional(list(string), [])
    list_ttl_seconds                 = optional(number, 10)
    max_instance_count               = optional(number, 10)
    max_instance_request_concurrency = optional(number, 20)
    memory_mib                       = optional(number, 256)
    min_instance_count               = optional(number, 0)
    timeout_seconds                  = optional(number, 30)
    writers                          = optional(list(string), [])
  })
  default  = {}
  nullable = false
  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_INTERNAL_ONLY"], var.registry.ingress_settings)
    error_message = "registry.ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_AND_GCLB or ALLOW_INTERNAL_ONLY."
  }
  validation {
    # Invocation is always authenticated: public principals are not accepted here.
    condition     = alltrue([for m in var.registry.invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+$", m))])
    error_message = "registry.invokers must be IAM members prefixed with user:, group:, serviceAccount:, domain:, principal: or principalSet: (public principals are refused)."
  }
  validation {
    condition     = alltrue([for w in var.registry.writers : can(regex("^[^@,\\s]+@[^@,\\s]+$", w))])
    error_message = "registry.writers must be email addresses (no commas)."
  }
  validation {
    condition     = startswith(var.registry.certs_url, "https://")
    error_message = "registry.certs_url must be an https:// URL."
  }
  validation {
    condition = alltrue([
      var.registry.list_ttl_seconds >= 0,
      var.registry.memory_mib >= 128,
      var.registry.max_instance_count >= 1,
      var.registry.max_instance_request_concurrency >= 1,
    ])
    error_message = "registry.list_ttl_seconds must be at least 0, memory_mib at least 128, max_instance_count and max_instance_request_concurrency at least 1."
  }
  validation {
    # 3600 s is the longest request an HTTP function (2nd gen) may take.
    condition     = var.registry.timeout_seconds >= 1 ? var.registry.timeout_seconds <= 3600 : false
    error_message = "registry.timeout_seconds must be between 1 and 3600."
  }
  validation {
    condition     = can(tonumber(var.registry.available_cpu)) ? (tonumber(var.registry.available_cpu) >= 1 || var.registry.max_instance_request_concurrency == 1) : false
    error_message = "registry.available_cpu must be a number of CPUs (\"0.5\", \"1\", \"2\"), and at least 1 when max_instance_request_concurrency is more than 1."
  }
  validation {
    condition     = var.registry.min_instance_count >= 0 ? var.registry.min_instance_count <= var.registry.max_instance_count : false
    error_message = "registry.min_instance_count must be between 0 and max_instance_count."
  }
}

variable "runtime" {
  description = "Python runtime of both functions."
  type        = string
  default     = "python311"
  nullable    = false
  validation {
    condition     = contains(["python310", "python311", "python312", "python313"], var.runtime)
    error_message = "runtime must be python310, python311, python312 or python313."
  }
}
