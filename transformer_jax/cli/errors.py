"""One line, not a traceback, for every error a user can cause; the traceback for the rest.

A `UserError` (config keys, data files, meshes, work directories, checkpoints), a bad flag
(absl's UsageError) or an OSError (a missing file, a full disk, no permission) is printed as
`error: <message>` and the tool
exits with status 2; `--verbose` shows the traceback as well. Any other exception is a bug:
it propagates with its traceback.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable

from absl import app, flags

from transformer_jax.errors import UserError

_VERBOSE = flags.DEFINE_bool('verbose', False, 'On an error, print its traceback too.')
USER_ERRORS = (UserError, OSError, app.UsageError)


def report_user_errors(main: Callable) -> Callable:
  """`main` wrapped for absl's app.run: user errors exit 2 with one line on stderr."""

  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if _VERBOSE.value:
        raise
      print(f'error: {one_line(e)}', file=sys.stderr)
      sys.exit(2)

  return wrapped


def one_line(error: BaseException) -> str:
  message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  message = message or type(error).__name__
  if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
    message = f'{error.filename}: {message}'
  return ' '.join(message.split())


@contextlib.contextmanager
def config_override_errors():
  """A bad --config.<key>=<value> (no such key, a value of the wrong type): one line, exit 2."""
  try:
    yield
  except (KeyError, AttributeError, TypeError, ValueError, flags.Error) as e:
    print(f'error: {one_line(e)}' if isinstance(e, flags.Error) else f'error: --config: {one_line(e)}',
          file=sys.stderr)
    sys.exit(2)
