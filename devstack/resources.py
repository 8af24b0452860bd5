"""Create the resources Terraform creates, on the emulators: buckets, topics, subscriptions,
dataset, tables (from the schema files the code and Terraform read) and views."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from google.api_core.exceptions import AlreadyExists, Conflict

from tally_cli.resources import ResourceNames

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "functions" / "event_handler" / "schemas"
VIEWS_DIR = ROOT / "bigquery" / "views"
WORKFLOWS_DIR = ROOT / "workflows"
REGISTRY_SOURCE = ROOT / "functions" / "registry"

# Partitioning and clustering of each table, as in terraform/bigquery.tf.
TABLES = {
    "events": {"partition_field": "received_time", "clustering": ["workflow", "version", "run_id"]},
    "runs": {"partition_field": "announced_time", "clustering": ["workflow", "version", "run_id"]},
}


@dataclass(frozen=True)
class Names(ResourceNames):
    """Resource names of one local platform: Terraform's (tally_cli.resources), in a project of its
    own, plus a subscription that sees every completion (Terraform's check subscription sees only
    tally check's runs)."""

    project: str = "tally-local"

    @property
    def completions_subscription(self) -> str:
        return self.prefixed("run-completions-all")


def registry_config() -> ModuleType:
    """The registry's settings (tally_registry.config): its code is deployed from its folder, as
    Cloud Functions does, and never installed."""
    if str(REGISTRY_SOURCE) not in sys.path:
        sys.path.append(str(REGISTRY_SOURCE))
    from tally_registry import config

    return config


def create_pubsub(publisher: Any, subscriber: Any, names: Names) -> None:
    for topic in (names.object_events_topic, names.completions_topic, names.dead_letter_topic):
        with contextlib.suppress(AlreadyExists):
            publisher.create_topic(name=names.topic(topic))
    # Acknowledgement deadlines are long: the push bridge holds messages during their backoff.
    for sub, topic in (
        (names.push_subscription, names.object_events_topic),
        (names.dead_letter_subscription, names.dead_letter_topic),
        (names.completions_subscription, names.completions_topic),
    ):
        with contextlib.suppress(AlreadyExists):
            subscriber.create_subscription(
                request={
                    "name": names.subscription(sub),
                    "topic": names.topic(topic),
                    "ack_deadline_seconds": 600,
                }
            )


def create_buckets(storage_client: Any, names: Names) -> None:
    for bucket in (names.outputs_bucket, names.registry_bucket):
        with contextlib.suppress(Conflict):
            storage_client.create_bucket(bucket)


def upload_workflows(storage_client: Any, bucket: str, workflows_dir: Path = WORKFLOWS_DIR) -> int:
    """Upload workflows/<workflow>/<version>.json as Terraform does; returns the count."""
    target = storage_client.bucket(bucket)
    count = 0
    for spec in sorted(workflows_dir.glob("*/*.json")):
        name = f"workflows/{spec.parent.name}/{spec.name}"
        target.blob(name).upload_from_string(spec.read_bytes(), content_type="application/json")
        count += 1
    return count


def load_schema(table: str) -> list[dict[str, Any]]:
    return json.loads((SCHEMA_DIR / f"{table}.json").read_text())


def view_sql(path: Path, names: Names) -> str:
    return path.read_text().replace("${dataset}", names.dataset_ref)


def create_bigquery(bq: Any, names: Names) -> None:
    from google.cloud import bigquery

    dataset = bigquery.Dataset(names.dataset_ref)
    bq.create_dataset(dataset, exists_ok=True)
    for table_name, layout in TABLES.items():
        schema = [bigquery.SchemaField.from_api_repr(f) for f in load_schema(table_name)]
        table = bigquery.Table(names.table(table_name), schema=schema)
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=layout["partition_field"]
        )
        table.clustering_fields = layout["clustering"]
        bq.create_table(table, exists_ok=True)
    for path in sorted(VIEWS_DIR.glob("*.sql")):
        view = bigquery.Table(names.table(path.stem))
        view.view_query = view_sql(path, names)
        bq.create_table(view, exists_ok=True)
