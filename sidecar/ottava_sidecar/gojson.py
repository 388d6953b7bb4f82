"""JSON read as Dapr's Go code reads it: `null` for a field is the field not given.

Go's `encoding/json` leaves a field at its zero value when the JSON says `null`, so
Dapr's clients and apps send `null` freely: the JavaScript SDK's state transaction
always carries `"metadata": null`, and Jackson (the Java SDK's apps) writes every unset
field as `null`. Every JSON body the sidecar reads from a client or an app goes through
`given` (the request bodies of the HTTP API and the app's answers by deriving from
`Model`, the state query language by calling it), so `null` means the same everywhere.
"""

from typing import Any

from pydantic import BaseModel, model_validator


def given(unit: Any) -> Any:
    """A JSON object without its null fields; anything else as it is."""
    if isinstance(unit, dict) and None in unit.values():
        return {name: value for name, value in unit.items() if value is not None}
    return unit


class Model(BaseModel):
    """A pydantic model of a JSON object whose null fields are fields not given.

    A field whose type holds null has null as its default too, so dropping every null
    field leaves `"value": null` (a state value, an event) as it was.
    """

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        return given(data)
