"""The Multi30k TFDS builder and reader (no TensorFlow); the registry entry is `__init__.py`.

The builder writes ArrayRecord files; `load_multi30k` reads them back through
`tfds.data_source`, a random-access sequence of `{'en': str, 'de': str}` that
grain can shuffle and shard. TFDS only needs TensorFlow for TFRecord files and
`tf.data` readers, so this path never imports it (tests check `sys.modules`).

Raw text comes from a manual directory (`train.en`, `train.de`, `val.en`,
`val.de`, optionally `test_2016_flickr.en` ...) or, when none is configured,
from the official gzipped files on GitHub.
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from absl import logging
import tensorflow_datasets as tfds

from transformer_jax.data.datasets.multi30k import (  # noqa: F401 (re-exported)
    DOWNLOAD_URL, DOWNLOADED_SPLITS, HOW_TO_PROVIDE, LANGUAGES, MANUAL_DIR_ENV, REQUIRED_SPLITS,
    SPLIT_FILE_STEMS, Multi30kDataError,
    Multi30kFileNotFoundError, resolve_manual_dir)
from transformer_jax.text_files import split_lines


def read_lines(path: Path) -> list[str]:
  """UTF-8 lines of `path` (`text_files.split_lines`: split on '\n' only).

  Raises:
    Multi30kDataError: naming the file and the 1-based line of bad UTF-8.
  """
  try:
    return split_lines(path.read_bytes(), str(path))
  except ValueError as e:
    raise Multi30kDataError(str(e)) from None


def read_parallel_files(paths: Mapping[str, Path]) -> list[dict[str, str]]:
  """Aligned `{'en': ..., 'de': ...}` pairs; pairs with an empty side are skipped.

  Raises:
    Multi30kDataError: if the files differ in line count (both counts named).
  """
  lines = {lang: read_lines(paths[lang]) for lang in LANGUAGES}
  counts = {lang: len(lines[lang]) for lang in LANGUAGES}
  if counts['en'] != counts['de']:
    raise Multi30kDataError(
        f'Line counts differ: {paths["en"]} has {counts["en"]} lines but '
        f'{paths["de"]} has {counts["de"]}; line i of one must translate line i '
        'of the other.')
  pairs, empty = [], 0
  for en, de in zip(lines['en'], lines['de']):
    if not en.strip() or not de.strip():
      empty += 1
      continue
    pairs.append({'en': en, 'de': de})
  if empty:
    logging.warning('Skipped %d pairs with an empty line in %s / %s.',
                    empty, paths['en'], paths['de'])
  return pairs


def find_manual_split_files(manual_dir: Path) -> dict[str, dict[str, Path]]:
  """Split name -> language -> file, for every split present in `manual_dir`.

  Raises:
    Multi30kFileNotFoundError: if a train or validation file is missing.
  """
  found = {}
  for split, stem in SPLIT_FILE_STEMS.items():
    paths = {lang: manual_dir / f'{stem}.{lang}' for lang in LANGUAGES}
    missing = [p for p in paths.values() if not p.is_file()]
    if not missing:
      found[split] = paths
    elif split in REQUIRED_SPLITS:
      raise Multi30kFileNotFoundError(
          f'Missing Multi30k file {missing[0]}. {HOW_TO_PROVIDE}')
  return found


class Multi30k(tfds.core.GeneratorBasedBuilder):
  """Multi30k Task 1: 29,000 train and 1,014 validation en–de caption pairs."""

  VERSION = tfds.core.Version('1.0.0')
  # Lets TFDS's own DownloadConfig(manual_dir=...) point at the raw files too.
  MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_PROVIDE
  RELEASE_NOTES = {'1.0.0': 'Raw, true-cased text from multi30k/dataset task1/raw.'}

  def __init__(self, *, raw_dir: str | os.PathLike | None = None, **kwargs):
    """`raw_dir`: directory of raw text files; None downloads them."""
    self._raw_dir = None if raw_dir is None else Path(raw_dir)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {lang: tfds.features.Text() for lang in LANGUAGES}),
        supervised_keys=('en', 'de'),
        homepage='https://github.com/multi30k/dataset',
        # Keep file order so validation/test rows line up with the raw references.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    raw_dir = self._raw_dir or _manual_dir(dl_manager)
    if raw_dir is not None:  # nothing is fetched: test splits without files are simply absent
      files = find_manual_split_files(raw_dir)
      logging.info('Multi30k splits found in %s: %s', raw_dir, sorted(files))
    else:
      check_download_host_reachable()
      urls = {
          split: {lang: f'{DOWNLOAD_URL}{SPLIT_FILE_STEMS[split]}.{lang}.gz'
                  for lang in LANGUAGES}
          for split in DOWNLOADED_SPLITS
      }
      files = dl_manager.download_and_extract(urls)
    # Read and validate every split before TFDS writes any record.
    pairs = {split: read_parallel_files(paths) for split, paths in files.items()}
    return {split: self._generate_examples(p) for split, p in pairs.items()}

  def _generate_examples(self, pairs: Sequence[dict[str, str]]):
    for index, pair in enumerate(pairs):
      yield index, pair


def _manual_dir(dl_manager) -> Path | None:
  """The manual dir given through TFDS's DownloadConfig, if any (TFDS raises when unset)."""
  try:
    return Path(dl_manager.manual_dir)
  except (AssertionError, ValueError):
    return None


def check_download_host_reachable(timeout: float = 5.0) -> None:
  """Fails in seconds, not after minutes of TFDS's retries, when the files cannot be fetched."""
  host = urllib.parse.urlparse(DOWNLOAD_URL).hostname
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
  except OSError as e:
    raise Multi30kFileNotFoundError(
        f'No Multi30k files: neither config key `data.manual_dir` nor ${MANUAL_DIR_ENV} is set, '
        f'and {host} cannot be reached to download them ({e}). {HOW_TO_PROVIDE}') from None


class DecodedSource(Sequence):
  """Random-access pairs `{'en': str, 'de': str}` from a TFDS data source.

  With `in_memory` every record is read once up front (~1 s for Multi30k's
  4 MB), which makes later random access ~100x cheaper than ArrayRecord reads.
  """

  _READ_CHUNK = 1024

  def __init__(self, data_source: Sequence[Mapping[str, bytes]], *, in_memory: bool = True):
    self._data_source = data_source
    self._pairs = None
    if in_memory:
      self._pairs = []
      for start in range(0, len(data_source), self._READ_CHUNK):
        stop = min(start + self._READ_CHUNK, len(data_source))
        self._pairs.extend(map(_decode, data_source.__getitems__(range(start, stop))))

  def __len__(self) -> int:
    return len(self._data_source)

  def __getitem__(self, index: int) -> dict[str, str]:
    if not -len(self) <= index < len(self):
      raise IndexError(f'index {index} out of range for {len(self)} pairs')
    index %= len(self)  # ArrayRecord rejects negative keys.
    if self._pairs is not None:
      return self._pairs[index]
    return _decode(self._data_source[index])

  def __repr__(self) -> str:
    return f'DecodedSource({len(self)} pairs)'


def _decode(record: Mapping[str, bytes]) -> dict[str, str]:
  return {lang: record[lang].decode('utf-8') for lang in LANGUAGES}


def prepare_multi30k(data_dir: str | os.PathLike,
                     manual_dir: str | os.PathLike | None = None) -> Multi30k:
  """Writes `<data_dir>/multi30k/1.0.0/*.array_record` once; later calls reuse it.

  TFDS writes into an `incomplete.*` directory and renames it on success, so a
  failure leaves no dataset behind. Raw files are checked before that starts.
  A prepared dataset is reused whatever `manual_dir` says: delete it to rebuild.
  """
  builder = Multi30k(data_dir=os.fspath(data_dir), file_format='array_record')
  if builder.is_prepared():
    return builder
  raw_dir = resolve_manual_dir(manual_dir)
  if raw_dir is None:
    logging.info('No Multi30k manual directory; downloading from %s', DOWNLOAD_URL)
    builder.download_and_prepare(file_format='array_record')
    return builder
  find_manual_split_files(raw_dir)
  builder = Multi30k(data_dir=os.fspath(data_dir), file_format='array_record',
                     raw_dir=raw_dir)
  # Nothing is downloaded from a manual directory: keep TFDS's empty download
  # folders out of data_dir.
  with tempfile.TemporaryDirectory() as download_dir:
    builder.download_and_prepare(file_format='array_record', download_dir=download_dir)
  return builder


def load_multi30k(split: str, data_dir: str | os.PathLike,
                  manual_dir: str | os.PathLike | None = None, *,
                  in_memory: bool = True) -> DecodedSource:
  """A random-access source of `{'en': str, 'de': str}` for one split, in file order.

  Args:
    split: 'train', 'validation', or a test split whose files were present.
    data_dir: where the prepared dataset is cached (`<data_dir>/multi30k/1.0.0`).
    manual_dir: raw text directory; defaults to `$MULTI30K_DIR`, else download.
    in_memory: decode all pairs up front instead of reading records lazily.

  Raises:
    Multi30kDataError: unknown split (valid ones listed) or bad raw files.
  """
  if split not in SPLIT_FILE_STEMS:
    raise Multi30kDataError(
        f'Unknown Multi30k split {split!r}; valid splits: '
        f'{sorted(SPLIT_FILE_STEMS)}.')
  builder = prepare_multi30k(data_dir, manual_dir)
  available = sorted(builder.info.splits.keys())
  if split not in available:
    raise Multi30kDataError(
        f'Split {split!r} was not prepared in {builder.data_dir}; available: '
        f'{available}. Add its files (e.g. {SPLIT_FILE_STEMS[split]}.en) to the '
        'manual directory and prepare into a fresh data_dir.')
  data_source = tfds.data_source(
      'multi30k', split=split, data_dir=os.fspath(data_dir), download=False)
  return DecodedSource(data_source, in_memory=in_memory)
