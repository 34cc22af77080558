"""The one base class for errors a user can fix: the CLI prints them as one line."""


class UserError(Exception):
    """Bad input or settings; the message names the problem and the fix."""


class DataError(UserError):
    """A dataset or image problem the user can fix; the message says how."""
