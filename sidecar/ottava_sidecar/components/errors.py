"""Errors that components raise; the API layer turns them into each wire API's errors."""


class ComponentError(Exception):
    """A backend failed to do what was asked; the message says why."""


class ETagMismatchError(ComponentError):
    """The ETag sent does not match the stored one (or the item does not exist)."""


class ETagInvalidError(ComponentError):
    """The ETag sent is not one this store could have issued."""


class NotSupportedError(ComponentError):
    """The component cannot do this (e.g. a store without transactions)."""


class AccessDeniedError(ComponentError):
    """The backend refused the sidecar's identity (e.g. a Kubernetes Role without the rule)."""
