"""One exception type for everything the user can fix.

The CLI prints `error: <message>` on one line and exits with code 2; the message names the file,
row or field and says what to do. Lower layers raise it; nothing catches it but the CLI.
"""


class UlmfitError(Exception):
    """A problem with the user's input or files, with a one-line message that says the fix."""
