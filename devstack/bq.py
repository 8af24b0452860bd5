"""Start bqemulator with DuckDB's spatial extension loaded from its PyPI package.

bqemulator expects the extension to be installed; without network DuckDB cannot download it, so it
is imported from the `duckdb-extension-spatial` wheel first."""

import sys

import duckdb_extensions


def main() -> int:
    duckdb_extensions.import_extension("spatial")
    from bqemulator.cli import main as bqemulator_main

    sys.argv[0] = "bqemulator"
    return bqemulator_main()


if __name__ == "__main__":
    sys.exit(main())
