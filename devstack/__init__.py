"""tally's local platform: real emulators for Storage, Pub/Sub and BigQuery, both functions served
by functions-framework, and a push bridge that delivers the way a Pub/Sub push subscription does.

    with Stack() as stack:          # or: python -m devstack run
        stack.storage_client().bucket(stack.outputs_bucket).blob("wf/1/run/x").upload_from_string("")
"""

from devstack.stack import RegistryStack, Stack, StackError

__all__ = ["RegistryStack", "Stack", "StackError"]
