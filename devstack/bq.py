"""Start bqemulator with DuckDB's spatial extension loaded from its PyPI package, and without
its per-insert time-travel snapshots.

bqemulator expects the extension to be installed; without network DuckDB cannot download it, so it
is imported from the `duckdb-extension-spatial` wheel first.

bqemulator also copies a whole table into a new snapshot after every insertAll (for
`FOR SYSTEM_TIME AS OF`): each streaming insert then costs time and memory in proportion to the
table, and a test session's event log grows quadratically (1,000 inserts into `events` added about
860 MB). tally never reads a table's past, so automatic snapshots are turned off; explicit ones
still work.
"""

import sys
from typing import Any

import duckdb_extensions


def disable_auto_snapshots() -> None:
    from bqemulator.versioning.snapshots import SnapshotManager

    capture = SnapshotManager.capture

    def explicit_only(self: Any, project_id: str, dataset_id: str, table_id: str, *, kind="AUTO"):
        if kind == "AUTO":
            return None
        return capture(self, project_id, dataset_id, table_id, kind=kind)

    SnapshotManager.capture = explicit_only  # type: ignore[method-assign]


def main() -> int:
    duckdb_extensions.import_extension("spatial")
    disable_auto_snapshots()
    from bqemulator.cli import main as bqemulator_main

    sys.argv[0] = "bqemulator"
    return bqemulator_main()


if __name__ == "__main__":
    sys.exit(main())
