"""The project's error base class: bad input or an unusable environment, never a bug.

`jobs/cli.py` prints an error of this type as one line, `error: <message>`, and exits with status 2;
every other error keeps its traceback. Each message names its culprit: the key, file or path at fault.
Subclasses live where they are raised (RunDirError in storage/traces.py, ...); ConfigError lives here, as every
room that reads a setting raises it.
"""


class MarginalError(Exception):
    """Bad input (a key, file or path) or an unusable environment, named in the message."""


class ConfigError(MarginalError, ValueError):
    """An invalid config value; the message names the key."""
