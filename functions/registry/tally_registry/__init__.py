"""tally's registry of workflow specs: versioned expected outputs over HTTP.

Modules stay import-light (no flask, jsonschema, google-cloud-storage or google-auth at import
time) so that a cold start pays only for what a request uses.
"""

__all__ = []
