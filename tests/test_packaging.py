"""The package as it is installed: packaged configs by name, and the wheel on its own.

The fast tests cover `transformer_jax.configs` (names, paths, `resolve`) and how
`transformer-jax-train` rewrites `--config NAME` into a path. The slow ones build a wheel from
the working tree, install it into a fresh venv outside the checkout, and run its console scripts
from a directory outside the checkout, so that nothing comes from the repository: not the package
(an editable install of it may sit in the parent environment), not `configs/`, not `train.py`.

The venv is made with `--system-site-packages`, and, when the tests themselves run in a venv, a
.pth file that adds that venv's site-packages too: jax and the other dependencies come from the
current environment, the package only from the wheel. The venv's own site-packages comes first on
sys.path, ahead of any editable install's path or finder, which test (a) checks. Building needs no
network: `pip wheel --no-build-isolation` with the installed setuptools (>= 70.1, which builds
wheels itself; the dev extra asks for it).
"""
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile

import pytest

from toy_corpus import toy_pairs, write_split
from transformer_jax import configs

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ('multi30k', 'multi30k_de_en', 'tiny')
SCRIPTS = ('transformer-jax-train', 'transformer-jax-translate', 'transformer-jax-serve')


# --- transformer_jax.configs and --config NAME (fast) -----------------------------------------


def test_packaged_configs_have_names_files_and_configs():
  assert set(PACKAGED) <= set(configs.names()) and configs.DEFAULT in configs.names()
  assert configs.names() == sorted(configs.names())
  package_dir = Path(configs.__file__).parent
  for name in configs.names():
    path = Path(configs.path_of(name))
    assert path == package_dir / f'{name}.py' and path.is_file()
  tiny = configs.get_config('tiny')
  assert tiny.model.d_model == 32 and tiny.data.vocab_size == 200
  assert configs.get_config().to_dict() == configs.get_config(configs.DEFAULT).to_dict()
  for bad in ('nope', 'tiny.py', 'configs/tiny.py'):
    with pytest.raises(ValueError, match='no packaged config named'):
      configs.path_of(bad)
    with pytest.raises(ValueError, match='no packaged config named'):
      configs.get_config(bad)


def test_resolve_maps_names_to_packaged_files_and_leaves_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here, as for an installed package
  tiny = configs.path_of('tiny')
  assert configs.resolve('tiny') == tiny
  assert configs.resolve('multi30k_de_en') == configs.path_of('multi30k_de_en')
  # The checkout's spelling works outside a checkout too.
  assert configs.resolve('configs/tiny.py') == tiny
  assert configs.resolve('./configs/tiny.py') == tiny
  # Missing paths that are not a packaged config stay as given: the config flag reports them.
  for missing in ('nope', 'configs/nope.py', 'tiny.py', 'elsewhere/tiny.py',
                  'nope/configs/tiny.py'):
    assert configs.resolve(missing) == missing
  # An existing file wins, as given, even where its name is a packaged one.
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'tiny.py').write_text('def get_config():\n  return None\n')
  (tmp_path / 'tiny.py').write_text('def get_config():\n  return None\n')
  mine = tmp_path / 'mine.py'
  mine.write_text('def get_config():\n  return None\n')
  assert configs.resolve('configs/tiny.py') == 'configs/tiny.py'
  assert configs.resolve('tiny.py') == 'tiny.py'
  assert configs.resolve(str(mine)) == str(mine)
  assert configs.resolve('mine.py') == 'mine.py'
  assert configs.resolve('tiny') == tiny  # a bare name is always the packaged config


def test_resolve_config_argv_rewrites_only_the_config_value(tmp_path, monkeypatch):
  from transformer_jax.cli.train import resolve_config_argv
  monkeypatch.chdir(tmp_path)
  tiny = configs.path_of('tiny')
  mine = tmp_path / 'mine.py'
  mine.write_text('def get_config():\n  return None\n')
  rest = ['--workdir', 'tiny', '--config.num_train_steps=3', '--config.data.manual_dir=tiny']
  cases = {
      ('--config', 'tiny'): ['--config', tiny],
      ('--config=tiny',): [f'--config={tiny}'],
      ('-config', 'tiny'): ['-config', tiny],
      ('-config=tiny',): [f'-config={tiny}'],
      ('--config', 'configs/tiny.py'): ['--config', tiny],
      ('--config=configs/tiny.py',): [f'--config={tiny}'],
      ('--config', str(mine)): ['--config', str(mine)],
      ('--config=mine.py',): ['--config=mine.py'],
      ('--config', 'nope'): ['--config', 'nope'],
      ('--config=configs/nope.py',): ['--config=configs/nope.py'],
      ('--config',): ['--config'],  # no value: left for absl to report
      (): [],
  }
  for given, expected in cases.items():
    argv = ['transformer-jax-train', *given, *rest]
    before = list(argv)
    assert resolve_config_argv(argv) == ['transformer-jax-train', *expected, *rest], given
    assert argv == before  # a new list; the argument is not modified
  assert resolve_config_argv(['prog', *rest, '--config', 'tiny']) == ['prog', *rest,
                                                                       '--config', tiny]


def test_resolve_in_a_checkout_keeps_its_configs_path(monkeypatch):
  if not (REPO / 'configs' / 'tiny.py').is_file():
    pytest.skip('no configs/ link in this checkout')
  from transformer_jax.cli.train import resolve_config_argv
  monkeypatch.chdir(REPO)
  assert resolve_config_argv(['p', '--config', 'configs/tiny.py']) == ['p', '--config',
                                                                       'configs/tiny.py']
  assert os.path.samefile('configs/tiny.py', configs.path_of('tiny'))


# --- the wheel, installed in a fresh venv (slow) ----------------------------------------------


def _setuptools_builds_wheels() -> bool:
  """setuptools >= 70.1 has bdist_wheel itself; an older one needs the `wheel` package."""
  from importlib import metadata
  try:
    version = metadata.version('setuptools')
  except metadata.PackageNotFoundError:
    return False
  major_minor = tuple(int(p) for p in re.findall(r'\d+', version)[:2])
  if major_minor >= (70, 1):
    return True
  try:
    metadata.version('wheel')
    return True
  except metadata.PackageNotFoundError:
    return False


def _clean_env(**extra) -> dict:
  """The environment for the venv's processes: nothing that would put the checkout on the path."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'MULTI30K_DIR',
                      'VIRTUAL_ENV', 'PYTHONSAFEPATH')}
  env.update(PYTHONNOUSERSITE='1', PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_NO_INPUT='1', **extra)
  return env


def _run(what, command, *, cwd, env, timeout=300, input=None, check=True):
  """Runs `command`; prints how long it took; with `check`, fails on an exit status != 0."""
  start = time.perf_counter()
  result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, input=input,
                          capture_output=True, text=True, timeout=timeout)
  print(f'{what}: {time.perf_counter() - start:.1f} s, exit {result.returncode}')
  if check:
    assert result.returncode == 0, (f'{what} exited {result.returncode}\n--- stdout\n'
                                    f'{result.stdout[-3000:]}\n--- stderr\n'
                                    f'{result.stderr[-5000:]}')
  return result


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """The working tree's wheel, installed in a fresh venv: paths, and the env to run it with."""
  if not _setuptools_builds_wheels():
    pytest.skip('building a wheel offline needs setuptools>=70.1 (or `wheel`): '
                "pip install -e '.[dev]'")
  root = tmp_path_factory.mktemp('packaging')
  assert not root.resolve().is_relative_to(REPO), 'the temporary directory is inside the checkout'
  env = _clean_env()
  # Build from a copy of the working tree, so setuptools' build/ and *.egg-info stay out of it.
  source = root / 'source'
  source.mkdir()
  for entry in REPO.iterdir():
    if entry.is_file() and not entry.is_symlink():
      shutil.copy2(entry, source / entry.name)
  shutil.copytree(REPO / 'transformer_jax', source / 'transformer_jax',
                  ignore=shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info'))
  dist = root / 'dist'
  _run('pip wheel', [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                     '--no-build-isolation', '--no-index', '-w', dist, source], cwd=root, env=env)
  (wheel,) = dist.glob('transformer_jax-*.whl')

  venv = root / 'venv'
  _run('python -m venv', [sys.executable, '-m', 'venv', '--system-site-packages',
                          '--without-pip', venv], cwd=root, env=env)
  bin_dir = venv / ('Scripts' if os.name == 'nt' else 'bin')
  python = bin_dir / ('python.exe' if os.name == 'nt' else 'python')
  site_dir = Path(_run('venv site-packages', [python, '-c', 'import sysconfig; print('
                                              'sysconfig.get_path("purelib"))'],
                       cwd=root, env=env).stdout.strip())
  if sys.prefix != sys.base_prefix:
    # The tests run in a venv: --system-site-packages gives the base interpreter's packages,
    # not this venv's; add its site-packages (after the new venv's own).
    parents = [p for p in dict.fromkeys([sysconfig.get_path('purelib'),
                                         sysconfig.get_path('platlib')]) if p]
    (site_dir / '_parent_environment.pth').write_text(
        f'import site, sys; [site.addsitedir(p) for p in {parents!r} if p not in sys.path]\n')
  # pip comes from the parent environment; it installs into the venv (sys.prefix) and leaves an
  # install of the package outside it alone.
  _run('pip install', [python, '-m', 'pip', 'install', '-q', '--no-deps', '--force-reinstall',
                       '--no-index', wheel], cwd=root, env=env)
  outside = root / 'cwd'  # a working directory with no configs/, train.py or package in it
  outside.mkdir()
  return {'wheel': wheel, 'venv': venv, 'bin': bin_dir, 'python': python, 'site': site_dir,
          'outside': outside, 'env': env}


@pytest.mark.slow
def test_wheel_holds_every_module_config_and_entry_point(installed):
  with zipfile.ZipFile(installed['wheel']) as wheel:
    names = set(wheel.namelist())
    (entry_points,) = [n for n in names if n.endswith('.dist-info/entry_points.txt')]
    scripts = wheel.read(entry_points).decode()
  modules = {p.relative_to(REPO).as_posix() for p in (REPO / 'transformer_jax').rglob('*.py')
             if '__pycache__' not in p.parts}
  assert modules - names == set(), 'modules missing from the wheel'
  for name in PACKAGED:
    assert f'transformer_jax/configs/{name}.py' in names
  for package in ('data', 'data/datasets', 'data/datasets/multi30k', 'configs', 'cli', 'serving'):
    assert f'transformer_jax/{package}/__init__.py' in names
  assert 'transformer_jax/serving/page/index.html' in names  # the page is package data
  assert not any(n.startswith(('tests/', 'configs/', 'notebooks/', 'benchmarks/')) for n in names)
  assert 'transformer-jax-train = transformer_jax.cli.train:run' in scripts
  assert 'transformer-jax-translate = transformer_jax.cli.translate:run' in scripts
  assert 'transformer-jax-serve = transformer_jax.cli.serve:run' in scripts
  for script in SCRIPTS:
    assert (installed['bin'] / script).is_file(), script


@pytest.mark.slow
def test_the_venv_imports_the_package_from_the_wheel_not_the_checkout(installed):
  probe = ('import importlib, importlib.metadata, json, sys; import transformer_jax\n'
           'mods = ["transformer_jax", "transformer_jax.configs", "transformer_jax.configs.tiny",'
           ' "transformer_jax.cli.train", "transformer_jax.data.datasets.multi30k.builder"]\n'
           'print(json.dumps({"files": [importlib.import_module(m).__file__ for m in mods],'
           ' "configs": transformer_jax.configs.names(),'
           ' "tiny": transformer_jax.configs.path_of("tiny"),'
           ' "version": transformer_jax.__version__,'
           ' "dist": importlib.metadata.version("transformer_jax"),'
           ' "prefix": sys.prefix, "path": sys.path}))')
  out = json.loads(_run('import probe', [installed['python'], '-c', probe],
                        cwd=installed['outside'], env=installed['env']).stdout)
  site_dir = installed['site'].resolve()
  for file in [*out['files'], out['tiny']]:
    path = Path(file).resolve()
    assert path.is_relative_to(site_dir / 'transformer_jax'), (file, out['path'])
    assert not path.is_relative_to(REPO), file
  assert Path(out['prefix']).resolve() == installed['venv'].resolve()
  assert set(PACKAGED) <= set(out['configs'])
  assert out['dist'] == out['version']  # the venv's metadata, not an older editable install's


@pytest.mark.slow
def test_installed_scripts_train_and_translate_outside_the_checkout(installed, tmp_path):
  raw, workdir, cwd = tmp_path / 'raw', tmp_path / 'run', installed['outside']
  raw.mkdir()
  write_split(raw, 'train', toy_pairs(200, 0, min_words=3, max_words=9))
  write_split(raw, 'val', toy_pairs(20, 1, min_words=3, max_words=9))
  flags = os.environ.get('XLA_FLAGS', '')
  env = {**installed['env'], 'JAX_PLATFORMS': 'cpu',
         'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'xla'),
         'TFDS_DATA_DIR': str(tmp_path / 'tfds_home'),
         # Compiling dominates a 3-step run; see tests/test_sharding.py.
         'XLA_FLAGS': (flags if 'xla_backend_optimization_level' in flags
                       else f'{flags} --xla_backend_optimization_level=0'.strip())}
  train = installed['bin'] / 'transformer-jax-train'
  translate = installed['bin'] / 'transformer-jax-translate'

  unknown = _run('train --config no_such_config',
                 [train, '--config', 'no_such_config', '--workdir', tmp_path / 'unused'],
                 cwd=cwd, env=env, timeout=120, check=False)
  assert unknown.returncode != 0 and 'no_such_config' in unknown.stderr

  _run('transformer-jax-train',
       [train, '--config', 'tiny', '--workdir', workdir,
        '--config.num_train_steps=3', '--config.eval_every_steps=3',
        '--config.checkpoint_every_steps=3', '--config.log_every_steps=1',
        '--config.optimizer.warmup_steps=2', '--config.optimizer.cooldown_steps=1',
        '--config.eval.num_bleu_sentences=4', '--config.eval.max_decode_length=8',
        '--config.eval.batch_size=4', f'--config.data.manual_dir={raw}',
        f'--config.data.data_dir={tmp_path / "tfds"}'], cwd=cwd, env=env)
  assert (workdir / 'checkpoints' / '3').is_dir(), sorted(p.name for p in workdir.iterdir())
  assert (workdir / 'vocab' / 'spm.model').is_file()
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines() if line.strip()]
  assert [r['step'] for r in records if 'loss' in r] == [1, 2, 3]
  assert [r['step'] for r in records if 'eval_bleu' in r] == [3]
  assert not (cwd / 'runs').exists() and not any(cwd.iterdir())  # it wrote only where told

  sources = 'a dog runs .\nthe red ball\nthe child sits in the park .\n'
  result = _run('transformer-jax-translate', [translate, '--workdir', workdir, '--max_length=8'],
                cwd=cwd, env=env, input=sources, timeout=120)
  assert result.stdout.endswith('\n') and result.stdout.count('\n') == 3, repr(result.stdout)
  assert 'translated 3 lines' in result.stderr
