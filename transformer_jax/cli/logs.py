"""Console logging for the command-line tools."""
from __future__ import annotations


def quiet_libraries() -> None:
  """orbax and tfds log every file they touch at INFO; keep the console for the progress bar."""
  import logging as std_logging
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  for name in ('orbax', 'absl', 'tensorflow_datasets', 'jax'):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)
