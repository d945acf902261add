"""`UserError`: the base of every error a user can cause and fix (a config key, a file, a
flag, a work directory). Its message names the thing and says what to do, so the command-line
tools print it as one line (`cli/errors.py`); anything else is a bug and keeps its traceback.

Floor 0: imports nothing of the package.
"""


class UserError(Exception):
  """An error in what the user gave or where they pointed; the message says what to do."""


class DataError(UserError, ValueError):
  """Raw data that cannot be turned into sentence pairs (file, line and what to do)."""
