"""Cloud Functions entry point of tally's registry: `--target=handle`.

Kept thin and import-light: flask, functions_framework, jsonschema, google-cloud-storage and
google-auth are imported on first use, never here.
"""

from tally_registry.entry import handle

__all__ = ["handle"]
