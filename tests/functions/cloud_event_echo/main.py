"""A CloudEvent function that writes the event it received to $ECHO_FILE (the bridge test's
witness of what functions-framework made of a push envelope)."""

import json
import os

import functions_framework


@functions_framework.cloud_event
def echo(event):
    record = {"type": event["type"], "id": event["id"], "data": event.data}
    with open(os.environ["ECHO_FILE"], "w") as out:
        json.dump(record, out)
