"""Why the app could not be reached over the app channel.

Each error names the app and its address, so a log line or an API error tells the user
which process to look at. They sit below `messaging` and `invocation`, which catch them,
and `appchannel`, which raises them.
"""


class AppChannelError(Exception):
    """The app did not answer as it should; the message says why."""


class AppUnavailableError(AppChannelError):
    """Nothing accepts connections on the app port (the app is down or still starting)."""


class AppTimeoutError(AppChannelError):
    """The app took longer than the app timeout to answer."""


class AppUnimplementedError(AppChannelError):
    """The app does not serve this callback."""
