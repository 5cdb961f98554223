"""The one error type that is the user's to fix: a bad file, flag or value, with what to do in its
message. The command line prints it and exits 2; anything else is a bug and shows its traceback
(machine faults such as a full disk keep their own exit codes: os_faults.py)."""


class UserError(ValueError):
    """A problem with what the user gave (named in the message) and what to do about it.
    A ValueError, so that callers that validate values can catch either."""
