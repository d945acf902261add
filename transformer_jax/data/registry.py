"""The dataset registry: a dataset is a name -> how to load its splits, which language pairs
it has, and where its prepared data lives.

Every module in `transformer_jax/data/datasets/` registers its dataset when imported (the
registry imports them on first lookup); user code can `register_dataset(...)` its own.
Adding a dataset is one new module there: config validation, the trainer and the
Translator find it by `config.data.dataset`.

This module is light (no TFDS, no grain) so that config validation can ask it.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Callable

# A split: random access to examples {language code: text}.
Source = Sequence[Mapping[str, str]]
TRAIN, VALIDATION = 'train', 'validation'  # the split names every dataset provides


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A registered dataset.

  load_splits(data_config, splits) -> {split: Source}: prepares the data if needed (into
    `prepared_dir(data_config)`) and returns the splits asked for ('train', 'validation',
    or a dataset's own test split names).
  language_pairs: the (source, target) directions it can train; None: any pair its files hold.
  prepared_dir(data_config): where its prepared data lives (a cache; safe to delete).
  fingerprint(data_config) -> {file: digest}: identifies the raw data, so that a resumed run
    notices other data (None: nothing to check).
  vocab_path(data_config) -> path: for a dataset prepared as token ids, the SentencePiece model
    they were made with, which the run then uses (None: the run trains its own on 'train').
  """
  name: str
  load_splits: Callable[..., dict[str, Source]]
  language_pairs: tuple[tuple[str, str], ...] | None
  prepared_dir: Callable[..., str]
  description: str = ''
  fingerprint: Callable[..., dict[str, str]] | None = None
  vocab_path: Callable[..., str] | None = None


_DATASETS: dict[str, DatasetSpec] = {}
_discovered = False


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
  if spec.name in _DATASETS and _DATASETS[spec.name] != spec:
    raise ValueError(f'dataset {spec.name!r} is already registered')
  _DATASETS[spec.name] = spec
  return spec


def _discover() -> None:
  global _discovered
  if not _discovered:
    _discovered = True
    from transformer_jax.data import datasets
    for module in pkgutil.iter_modules(datasets.__path__):
      importlib.import_module(f'{datasets.__name__}.{module.name}')


def dataset_names() -> list[str]:
  _discover()
  return sorted(_DATASETS)


def get_dataset(name: str) -> DatasetSpec:
  _discover()
  if name not in _DATASETS:
    raise KeyError(f'unknown dataset {name!r}; registered: {sorted(_DATASETS)}')
  return _DATASETS[name]


def load_splits(data_config, splits: Sequence[str] = (TRAIN, VALIDATION)) -> dict[str, Source]:
  """The splits of `data_config.dataset`, prepared on first use."""
  return get_dataset(data_config.dataset).load_splits(data_config, tuple(splits))


def prepared_vocab_path(data_config) -> str | None:
  """The vocabulary `data_config.dataset` was prepared with, if it tokenises at preparation."""
  spec = get_dataset(data_config.dataset)
  return None if spec.vocab_path is None else spec.vocab_path(data_config)


def fingerprint(data_config) -> dict[str, str]:
  """What identifies the raw data of `data_config.dataset` ({} when the dataset says nothing)."""
  spec = get_dataset(data_config.dataset)
  return {} if spec.fingerprint is None else spec.fingerprint(data_config)
