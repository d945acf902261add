"""Run configs shipped with the package, usable by name or by path.

    python train.py --config multi30k_de_en        # a packaged config, by name
    python train.py --config path/to/my_config.py  # any file with get_config()

Each module has `get_config() -> ml_collections.ConfigDict`.
"""
from __future__ import annotations

import importlib
import os
import pkgutil

DEFAULT = 'multi30k'


def names() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__))


def path_of(name: str) -> str:
  """The file of packaged config `name` (what ml_collections' config flag loads)."""
  if name not in names():
    raise ValueError(f'no packaged config named {name!r}; packaged: {names()} '
                     '(or give the path of a .py file with get_config())')
  return os.path.join(os.path.dirname(__file__), f'{name}.py')


def resolve(value: str) -> str:
  """A --config value as a file path: an existing file as given, else a packaged config's file.

  `configs/tiny.py` from a checkout resolves to the same file as `tiny`; a missing path that
  is not a packaged name stays as given, so the config flag reports it.
  """
  if os.path.isfile(value):
    return value
  stem = os.path.splitext(os.path.basename(value))[0]
  if value in names() or (value.endswith('.py') and stem in names()
                          and os.path.dirname(value) in ('configs', './configs')):
    return path_of(stem)
  return value


def get_config(name: str = DEFAULT):
  """The ConfigDict of packaged config `name`."""
  path_of(name)  # a clear error for an unknown name
  return importlib.import_module(f'{__name__}.{name}').get_config()
