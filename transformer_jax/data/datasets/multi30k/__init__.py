"""Multi30k Task 1 (English–German captions): the registry entry, light to import.

29,000 train and 1,014 validation pairs, en→de or de→en. The raw files come from
`data.manual_dir`, else `$MULTI30K_DIR`, else a download of the official files; they are
prepared once by the TFDS builder in builder.py (ArrayRecord, no TensorFlow) into a
directory keyed by the raw files, read back through `tfds.data_source`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from transformer_jax.data.file_identity import file_digest
from transformer_jax.data.registry import DatasetSpec, register_dataset
from transformer_jax.errors import DataError

LANGUAGES = ('en', 'de')
MANUAL_DIR_ENV = 'MULTI30K_DIR'
DOWNLOAD_URL = 'https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/'

# TFDS split name -> file stem in the Multi30k repository (`<stem>.<lang>`).
SPLIT_FILE_STEMS = {
    'train': 'train',
    'validation': 'val',
    'test2016': 'test_2016_flickr',
    'test2017': 'test_2017_flickr',
    'test2017_mscoco': 'test_2017_mscoco',
    'test2018': 'test_2018_flickr',
}
REQUIRED_SPLITS = ('train', 'validation')
# test_2018_flickr.de was published late and is not in every copy; never fetched.
DOWNLOADED_SPLITS = ('train', 'validation', 'test2016', 'test2017', 'test2017_mscoco')

HOW_TO_PROVIDE = (
    f'Provide a directory holding train.en, train.de, val.en and val.de (gunzipped, '
    f'from {DOWNLOAD_URL}) through the config key `data.manual_dir` or the '
    f'environment variable {MANUAL_DIR_ENV}.'
)


class Multi30kDataError(DataError):
  """Raw Multi30k text that cannot be turned into sentence pairs."""


class Multi30kFileNotFoundError(Multi30kDataError, FileNotFoundError):
  """The manual directory or one of its required files is missing."""


def resolve_manual_dir(manual_dir: str | os.PathLike | None) -> Path | None:
  """The explicit argument, else `$MULTI30K_DIR`, else None (= download)."""
  chosen = manual_dir or os.environ.get(MANUAL_DIR_ENV) or None
  if chosen is None:
    return None
  path = Path(chosen).expanduser()
  if not path.is_dir():
    raise Multi30kFileNotFoundError(
        f'Multi30k manual directory {path} does not exist. {HOW_TO_PROVIDE}')
  return path



def fingerprint(data_config) -> dict[str, str]:
  """{raw file name: digest} of the split files the builder reads; the URL when downloading."""
  raw_dir = resolve_manual_dir(data_config.manual_dir or None)
  if raw_dir is None:
    return {'download': DOWNLOAD_URL}
  names = [f'{stem}.{lang}' for stem in SPLIT_FILE_STEMS.values() for lang in LANGUAGES]
  return {name: file_digest(raw_dir / name) for name in names if (raw_dir / name).is_file()}


def prepared_dir(data_config) -> str:
  """`data.data_dir`, else a directory under $TFDS_DATA_DIR (or ~/tensorflow_datasets).

  The default is keyed by the raw files' content (`fingerprint`), so a run on fixture files
  never leaves a prepared dataset that a real run reuses, and an edited file (even one of
  the same size) is prepared anew, never mixed with the old records.
  """
  if data_config.data_dir:
    return data_config.data_dir
  base = os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')
  key = repr(sorted(fingerprint(data_config).items()))
  if resolve_manual_dir(data_config.manual_dir or None) is None:
    return os.path.join(base, 'multi30k_download')
  return os.path.join(base, 'multi30k_' + hashlib.sha1(key.encode()).hexdigest()[:10])


def load_splits(data_config, splits) -> dict:
  """Random-access {'en', 'de'} sources of `splits`, prepared on first use."""
  from transformer_jax.data.datasets.multi30k.builder import load_multi30k
  data_dir = prepared_dir(data_config)
  manual_dir = data_config.manual_dir or None
  return {split: load_multi30k(split, data_dir, manual_dir) for split in splits}


DATASET = register_dataset(DatasetSpec(
    name='multi30k', load_splits=load_splits, language_pairs=(('en', 'de'), ('de', 'en')),
    prepared_dir=prepared_dir, fingerprint=fingerprint, description=__doc__.splitlines()[0]))
