"""The notebooks run top to bottom, and each committed .ipynb holds the cells of its .py source.

Notebooks are executed from their jupytext `.py` sources (the reviewed text) in a kernel of the
current interpreter, with cwd = notebooks/. `02_translate_multi30k` runs in smoke mode
(`TRANSFORMER_JAX_NOTEBOOK_SMOKE=1`: tiny model, a few hundred sentence pairs written here).
Their install cell is also run on its own, by `python -S` with a stand-in pip, in each of the
cases it handles (installed, $TRANSFORMER_JAX_SOURCE, a checkout, none).
"""
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

import pytest

jupytext = pytest.importorskip('jupytext')
nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')
pytest.importorskip('ipykernel')

from toy_corpus import write_train_val  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / 'notebooks'
SOURCES = sorted(NOTEBOOKS.glob('[0-9][0-9]_*.py'))
KERNEL = 'transformer-jax-tests'
FIGURES = ('training_curves.png', 'cross_attention.png')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture
def kernel(tmp_path, monkeypatch):
  """A kernelspec that runs this interpreter, found through JUPYTER_PATH.

  The kernel inherits the environment; XLA compiles without LLVM optimisation there (as in
  test_sharding.py): the notebooks are dominated by compiling small programs, not running them.
  """
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_backend_optimization_level' not in flags:
    monkeypatch.setenv('XLA_FLAGS', f'{flags} --xla_backend_optimization_level=0'.strip())
  spec_dir = tmp_path / 'jupyter' / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': KERNEL, 'language': 'python'}))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  return KERNEL


def _execute(name: str, kernel_name: str):
  """Runs notebooks/<name>.py top to bottom; returns (executed notebook, seconds)."""
  nb = jupytext.read(NOTEBOOKS / f'{name}.py')
  client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=600,
                                   resources={'metadata': {'path': str(NOTEBOOKS)}})
  start = time.perf_counter()
  client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
  seconds = time.perf_counter() - start
  print(f'{name}: {seconds:.1f} s')
  return nb, seconds


def _stdout(cell) -> str:
  return ''.join(o.get('text', '') for o in cell.get('outputs', []) if o.output_type == 'stream')


@pytest.mark.slow
def test_self_attention_notebook_runs_and_matches_the_module(kernel):
  nb, _ = _execute('01_self_attention', kernel)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(c.execution_count for c in code), 'a cell did not run'
  check = [c for c in code if 'CHECK PASSED' in c.source]
  assert len(check) == 1 and 'assert_allclose(y_BTD' in check[0].source
  assert 'CHECK PASSED: SelfAttention reproduces' in _stdout(check[0])
  assert sum('image/png' in o.get('data', {}) for c in code for o in c.outputs) >= 5


@pytest.mark.slow
def test_translate_notebook_trains_translates_and_saves_figures(kernel, tmp_path, monkeypatch):
  figures = tmp_path / 'figures'
  monkeypatch.setenv('TRANSFORMER_JAX_NOTEBOOK_SMOKE', '1')
  # 300 train, 40 val pairs: the first of $MULTI30K_DIR's files if set, else toy pairs.
  monkeypatch.setenv('MULTI30K_DIR', str(write_train_val(tmp_path / 'multi30k', 300, 40)))
  monkeypatch.setenv('TRANSFORMER_JAX_FIGURE_DIR', str(figures))
  monkeypatch.setenv('TRANSFORMER_JAX_NOTEBOOK_WORKDIR', str(tmp_path / 'run'))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))  # never touch ~/tensorflow_datasets
  nb, _ = _execute('02_translate_multi30k', kernel)
  for name in FIGURES:
    path = figures / name
    assert path.is_file() and path.stat().st_size > 1000, name
    assert path.read_bytes()[:8] == PNG_MAGIC, name
  printed = '\n'.join(_stdout(c) for c in nb.cells if c.cell_type == 'code')
  assert 'validation BLEU = ' in printed
  assert 'greedy ' in printed and 'beam 4 ' in printed
  assert (tmp_path / 'run' / 'metrics.jsonl').is_file()
  shutil.rmtree(tmp_path / 'run', ignore_errors=True)  # checkpoints are the bulk of tmp_path


@pytest.mark.parametrize('source', SOURCES, ids=[p.stem for p in SOURCES])
def test_ipynb_is_in_sync_with_its_py_source_and_has_no_outputs(source):
  paired = source.with_suffix('.ipynb')
  assert paired.is_file(), f'{paired.name} missing: run `jupytext --sync notebooks/*.ipynb`'
  from_py = jupytext.read(source)
  from_ipynb = nbformat.read(paired, as_version=4)
  cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
  assert cells(from_ipynb) == cells(from_py), (
      f'{paired.name} and {source.name} differ: run `jupytext --sync notebooks/*.ipynb`')
  assert 'py:percent' in from_ipynb.metadata.get('jupytext', {}).get('formats', '')
  for cell in from_ipynb.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, (
          f'{paired.name} holds outputs: strip them before committing')


def test_both_notebooks_are_present():
  assert [p.stem for p in SOURCES] == ['01_self_attention', '02_translate_multi30k']


# --- the install cell --------------------------------------------------------------------------

# A stand-in for `python -m pip`, found first through PYTHONPATH: records its arguments and, for a
# non-editable install, "installs" a package into $FAKE_SITE (also on PYTHONPATH).
FAKE_PIP = '''
import json, os, pathlib, sys
with open(os.environ['FAKE_PIP_LOG'], 'a') as log:
  log.write(json.dumps(sys.argv[1:]) + '\\n')
if '-e' not in sys.argv:
  package = pathlib.Path(os.environ['FAKE_SITE'], 'transformer_jax')
  package.mkdir(parents=True)
  (package / '__init__.py').write_text("__version__ = 'from-pip'\\n")
'''


def _install_cell(source: Path) -> str:
  cells = [c.source for c in jupytext.read(source).cells
           if c.cell_type == 'code' and 'TRANSFORMER_JAX_SOURCE' in c.source]
  assert len(cells) == 1, f'{source.name}: expected one install cell'
  return cells[0]


def test_no_notebook_has_a_placeholder_or_needs_the_checkout_on_sys_path():
  for path in [*SOURCES, *(p.with_suffix('.ipynb') for p in SOURCES), NOTEBOOKS / 'README.md']:
    text = path.read_text(encoding='utf-8')
    for stale in ('YOUR_ORG', 'REPO_URL', 'REPO_ROOT', 'git clone'):
      assert stale not in text, f'{path.name} still has {stale!r}'
  assert _install_cell(SOURCES[0]) == _install_cell(SOURCES[1]), 'the install cells differ'


@pytest.mark.parametrize('source', SOURCES, ids=[p.stem for p in SOURCES])
def test_install_cell_uses_installed_package_else_checkout_else_source_variable(source, tmp_path):
  """The install cell, run by `python -S` (no site-packages: transformer_jax is not importable)
  with a stand-in pip, in each of its four situations."""
  cell = _install_cell(source)
  fake_pip, site_dir = tmp_path / 'fake_pip', tmp_path / 'site'
  (fake_pip / 'pip').mkdir(parents=True)
  (fake_pip / 'pip' / '__main__.py').write_text(FAKE_PIP)
  (fake_pip / 'pip' / '__init__.py').write_text('')
  checkout = tmp_path / 'checkout'
  (checkout / 'notebooks').mkdir(parents=True)
  (checkout / 'pyproject.toml').write_text('[project]\nname = "transformer_jax"\n')
  (checkout / 'transformer_jax').mkdir()
  (checkout / 'transformer_jax' / '__init__.py').write_text("__version__ = 'checkout'\n")
  elsewhere = tmp_path / 'colab' / 'content'
  elsewhere.mkdir(parents=True)

  def run(cwd, source_variable=None, installed=False):
    if site_dir.exists():
      shutil.rmtree(site_dir)
    site_dir.mkdir()
    if installed:
      (site_dir / 'transformer_jax').mkdir()
      (site_dir / 'transformer_jax' / '__init__.py').write_text("__version__ = 'installed'\n")
    log = tmp_path / 'pip.log'
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ('TRANSFORMER_JAX_SOURCE', 'PYTHONHOME')}
    env.update(PYTHONPATH=os.pathsep.join([str(fake_pip), str(site_dir)]), PYTHONNOUSERSITE='1',
               FAKE_PIP_LOG=str(log), FAKE_SITE=str(site_dir))
    if source_variable is not None:
      env['TRANSFORMER_JAX_SOURCE'] = source_variable
    result = subprocess.run([sys.executable, '-S', '-c', cell], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    pip_calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, pip_calls

  # (ii) importable already: nothing is installed, whatever else holds.
  for cwd, variable in ((checkout / 'notebooks', None), (elsewhere, 'git+https://h/x.git')):
    result, pip_calls = run(cwd, variable, installed=True)
    assert result.returncode == 0, result.stderr
    assert pip_calls == [] and 'transformer_jax installed from' in result.stdout
  # (i) in a checkout: an editable install of it, imported in this same kernel.
  result, pip_calls = run(checkout / 'notebooks')
  assert result.returncode == 0, result.stderr
  assert pip_calls == [['install', '-q', '-e', str(checkout)]]
  assert f'transformer_jax checkout from {checkout / "transformer_jax"}' in result.stdout
  # (iii) $TRANSFORMER_JAX_SOURCE, passed to pip as it is (it wins over a checkout).
  for cwd in (elsewhere, checkout / 'notebooks'):
    result, pip_calls = run(cwd, 'git+https://example.invalid/transformer_jax.git@v1')
    assert result.returncode == 0, result.stderr
    assert pip_calls == [['install', '-q', 'git+https://example.invalid/transformer_jax.git@v1']]
    assert 'transformer_jax from-pip from' in result.stdout
  # None of them: a clear error naming the variable, and no pip.
  for variable in (None, '', '  '):
    result, pip_calls = run(elsewhere, variable)
    assert result.returncode != 0 and pip_calls == []
    assert 'RuntimeError' in result.stderr and 'TRANSFORMER_JAX_SOURCE' in result.stderr
