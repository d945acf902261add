"""The package's floors (docs/ARCHITECTURE.md): a module imports from its floor or below, never
above, never a sibling flow; and the light entry points stay light."""
import ast
from pathlib import Path
import subprocess
import sys

PACKAGE = Path(__file__).resolve().parents[1] / 'transformer_jax'

# Each area of the package, its floor, and the areas it may import (besides its own).
ALLOWED = {
    'nn': {'errors'},
    'data': {'errors', 'text_files'},
    'text_files': set(),
    'errors': set(),
    'host_memory': set(),  # stdlib only: the CLI calls it before anything starts jax
    'configs': set(),
    'floor1': {'nn', 'data', 'errors', 'text_files'},
    # Models in and out (Marian, CTranslate2): on floor 1's level, so that the Translator
    # (from_pretrained) and the trainer (init_from) can read a checkpoint through it.
    'interop': {'floor1', 'nn', 'data', 'errors', 'text_files', 'configs'},
    'decoding': {'interop', 'floor1', 'nn', 'data', 'errors', 'text_files'},
    'training': {'decoding', 'interop', 'floor1', 'nn', 'data', 'errors', 'text_files'},
    'serving': {'decoding', 'floor1', 'nn', 'data', 'errors', 'text_files'},
    'cli': {'serving', 'training', 'decoding', 'interop', 'floor1', 'nn', 'data', 'errors',
            'text_files', 'configs', 'host_memory'},
}
FLOOR1 = {'config_lib', 'sharding', 'checkpointing', 'checkpoint_integrity',
          'checkpoint_selection', 'workdir', 'workdir_lock', 'scoring'}


def _area(module: str) -> str | None:
  parts = module.split('.')
  if parts[0] != 'transformer_jax' or len(parts) == 1:
    return None
  return 'floor1' if parts[1] in FLOOR1 else parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
  found = []
  for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == 'transformer_jax':  # from transformer_jax import x: x is the module
        found += [(node.lineno, f'transformer_jax.{alias.name}') for alias in node.names]
      else:
        found.append((node.lineno, node.module))
  return found


def test_every_import_goes_down_or_stays_on_its_floor():
  violations = []
  for path in sorted(PACKAGE.rglob('*.py')):
    module = '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if module == 'transformer_jax.__init__':
      # The package root imports nn eagerly, so it stands on nn's floor; the rest it re-exports
      # through importlib and its _LAZY dict, which are not import statements: exempt.
      area = 'nn'
    else:
      area = _area(module.removesuffix('.__init__'))
    assert area in ALLOWED, f'{module}: area {area!r} has no floor in this test'
    for line, imported in _imports(path):
      target = _area(imported)
      if target is not None and target != area and target not in ALLOWED[area]:
        violations.append(f'{path.relative_to(PACKAGE.parent)}:{line} imports {imported} '
                          f'({target}), which {area} may not import')
  assert not violations, '\n'.join(violations)


def _loaded_after(imports: str, libraries: tuple[str, ...]) -> list[str]:
  """Which of `libraries` a fresh interpreter has in sys.modules after running `imports`."""
  script = f'import sys\n{imports}\nprint(sorted(m for m in {libraries!r} if m in sys.modules))'
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120, cwd=PACKAGE.parent)
  assert result.returncode == 0, result.stderr
  return ast.literal_eval(result.stdout.strip())


def test_the_model_the_config_check_and_the_registry_load_no_data_checkpoint_or_serving_library():
  imports = ('import transformer_jax, transformer_jax.config_lib\n'
             'from transformer_jax.data import registry\n'
             "assert 'multi30k' in registry.dataset_names()")
  assert _loaded_after(imports, ('grain', 'tensorflow_datasets', 'orbax', 'tensorflow',
                                 'fastapi', 'uvicorn', 'starlette', 'transformers', 'torch',
                                 'ctranslate2', 'safetensors')) == []


def test_the_interop_modules_import_their_libraries_only_when_used():
  """The interop extra (transformers, torch, safetensors, ctranslate2) is optional: a Translator
  and every interop module import without it; only reading, writing or converting needs it."""
  imports = ('from transformer_jax import Translator\n'
             'from transformer_jax.interop import ctranslate2, marian_export, marian_format, '
             'marian_import\n'
             'from transformer_jax.cli import inputs, translate')
  assert _loaded_after(imports, ('transformers', 'torch', 'ctranslate2', 'safetensors')) == []
