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
    condition     = can(regex("^[A-Za-z0-9_]{1,1024}$", var.bigquery.dataset_id))
    error_message = "bigquery.dataset_id may only contain letters, digits and underscores."
  }
  validation {
    condition     = coalesce(var.bigquery.partition_expiration_days, 1) >= 1
    error_message = "bigquery.partition_expiration_days must be null (keep partitions forever) or at least 1."
  }
}

variable "build_service_account" {
  description = "Email of the service account Cloud Build uses to build both functions; null keeps the project's default build service account."
  type        = string
  default     = null
  validation {
    condition     = var.build_service_account == null ? true : can(regex("^[^@\\s]+@[^@\\s]+\\.iam\\.gserviceaccount\\.com$", var.build_service_account))
    error_message = "build_service_account must be null or a service account email (NAME@PROJECT.iam.gserviceaccount.com)."
  }
}

variable "completions_webhook_url" {
  description = "HTTPS endpoint that receives every run completion as a Pub/Sub push; null creates no webhook subscription."
  type        = string
  default     = null
  validation {
    condition     = var.completions_webhook_url == null ? true : startswith(var.completions_webhook_url, "https://")
    error_message = "completions_webhook_url must be null or an https:// URL."
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
    condition = alltrue([
      var.event_handler.claim_lease_seconds >= 1,
      var.event_handler.presence_cache_runs >= 0,
      var.event_handler.reconcile_max_runs >= 1,
    ])
    error_message = "event_handler.claim_lease_seconds and reconcile_max_runs must be at least 1, presence_cache_runs at least 0 (0 turns the cache off)."
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

variable "reconcile_interval_minutes" {
  description = "Minutes between two reconcile requests published by Cloud Scheduler; null creates no scheduler job."
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
  description = "Registry function: resources, scaling, ingress, who may call it (IAM members) and who may register versions (emails, TALLY_REGISTRY_WRITERS)."
  type = object({
    available_cpu                    = optional(string, "1")
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
      var.registry.timeout_seconds >= 1,
    ])
    error_message = "registry.list_ttl_seconds must be at least 0, memory_mib at least 128, max_instance_count and timeout_seconds at least 1."
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
