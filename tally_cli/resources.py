"""The names of a deployment's resources, derived as Terraform derives them (terraform/main.tf).

Terraform names every topic, subscription, function and service account `<prefix>-<resource>` and
every bucket `<project>-<prefix>-<resource>` (the outputs bucket unless `outputs_bucket.name` is
set); the dataset is `bigquery.dataset_id`, not prefixed. This is that rule, once, for the CLI's
defaults and the local platform (devstack); tests/terraform checks it against the locals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_DATASET", "DEFAULT_PREFIX", "PREFIX_PATTERN", "ResourceNames"]

DEFAULT_PREFIX = "tally"  # terraform/variables.tf: prefix
DEFAULT_DATASET = "tally"  # terraform/variables.tf: bigquery.dataset_id
# terraform/variables.tf, prefix's validation: "-event-handler" must fit a service account id.
PREFIX_PATTERN = r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$"


@dataclass(frozen=True)
class ResourceNames:
    """The resource names of one deployment (project, prefix, dataset)."""

    project: str
    prefix: str = DEFAULT_PREFIX
    dataset: str = DEFAULT_DATASET

    def __post_init__(self) -> None:
        if not re.fullmatch(PREFIX_PATTERN, self.prefix):
            raise ValueError(
                f"prefix {self.prefix!r} is invalid: use 2 to 16 lowercase letters, digits or "
                "hyphens, starting with a letter and not ending with a hyphen (as Terraform's)"
            )

    def prefixed(self, resource: str) -> str:
        """A topic, subscription, function or service account: `<prefix>-<resource>`."""
        return f"{self.prefix}-{resource}"

    def bucket(self, resource: str) -> str:
        """A bucket (a global namespace): `<project>-<prefix>-<resource>`."""
        return f"{self.project}-{self.prefix}-{resource}"

    # One property per resource, alike as they are: callers name resources as attributes, and the
    # naming rule stays in prefixed() and bucket() (tests/terraform/test_tf_names.py: as Terraform).
    # -- buckets ------------------------------------------------------------------------------
    @property
    def outputs_bucket(self) -> str:
        return self.bucket("outputs")

    @property
    def registry_bucket(self) -> str:
        return self.bucket("registry")

    @property
    def sources_bucket(self) -> str:
        return self.bucket("sources")

    # -- Pub/Sub ------------------------------------------------------------------------------
    @property
    def object_events_topic(self) -> str:
        return self.prefixed("object-events")

    @property
    def completions_topic(self) -> str:
        return self.prefixed("run-completions")

    @property
    def dead_letter_topic(self) -> str:
        return self.prefixed("dead-letter")

    @property
    def push_subscription(self) -> str:
        """The push subscription feeding the event handler: named after the function."""
        return self.event_handler_function

    @property
    def dead_letter_subscription(self) -> str:
        return self.prefixed("dead-letter")

    @property
    def check_subscription(self) -> str:
        return self.prefixed("check")

    # -- functions ----------------------------------------------------------------------------
    @property
    def event_handler_function(self) -> str:
        return self.prefixed("event-handler")

    @property
    def registry_function(self) -> str:
        return self.prefixed("registry")

    # -- BigQuery (project.dataset.table, the form the event handler takes) --------------------
    @property
    def dataset_ref(self) -> str:
        return f"{self.project}.{self.dataset}"

    def table(self, name: str) -> str:
        return f"{self.dataset_ref}.{name}"

    @property
    def events_table(self) -> str:
        return self.table("events")

    @property
    def runs_table(self) -> str:
        return self.table("runs")

    # -- full paths ---------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"
