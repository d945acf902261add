"""Device mesh, logical-axis rules and shardings for params, optimizer state and batches.

The modules annotate every Param with logical axis names (layers.py); this file
is the one place that maps them onto the mesh axes ('data', 'fsdp', 'tensor'):
  data   - pure data parallelism: params replicated, batch split.
  fsdp   - batch split too, and params/optimizer state split along 'embed'.
  tensor - Megatron-style: heads, d_ff and vocab split; activations follow.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from transformer_jax.errors import UserError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')
LOGICAL_RULES = {
    'vocab': 'tensor',
    'embed': 'fsdp',
    'heads': 'tensor',
    'mlp': 'tensor',
    'kv': None,
}


class MeshError(UserError, ValueError):
  """A mesh configuration does not fit the devices or the batch."""


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """Resolves (-1 = the rest) and checks config.mesh against the device count."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if sum(s == -1 for s in sizes) > 1:
    raise MeshError(f'config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}')
  known = math.prod(s for s in sizes if s != -1)
  if num_devices % known:
    raise MeshError(f'config.mesh {dict(zip(MESH_AXES, sizes))}: the product of the fixed axes '
                    f'({known}) does not divide the {num_devices} devices')
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise MeshError(f'config.mesh {dict(zip(MESH_AXES, sizes))} uses {math.prod(sizes)} devices '
                    f'but {num_devices} are available; set one axis to -1 to take the rest')
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_to_spec(logical_axes, shape, mesh) -> P:
  """PartitionSpec for one param: a rule's mesh axis is used only if it divides the dim."""
  used, spec = set(), []
  for name, dim in zip(logical_axes, shape):
    axis = LOGICAL_RULES.get(name) if name else None
    if axis is None or axis in used or mesh.shape[axis] == 1 or dim % mesh.shape[axis]:
      spec.append(None)
    else:
      spec.append(axis)
      used.add(axis)
  return P(*spec)


def param_shardings(abstract_params, mesh):
  """NamedShardings, by the rules above, for an nnx.State of Params."""
  def one(var):
    axes = var.get_metadata().get('logical_axes', (None,) * len(var.get_value().shape))
    return var.replace(NamedSharding(mesh, logical_to_spec(axes, var.get_value().shape, mesh)))
  return jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(abstract_state, tx, mesh):
  """Shardings for a TrainState: optimizer moments and the EMA follow their params; the rest
  replicated."""
  replicated = NamedSharding(mesh, P())
  params_sh = param_shardings(abstract_state.params, mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, sh: sh, abstract_state.opt_state, params_sh,
                                 transform_non_params=lambda _: replicated,
                                 is_leaf=lambda x: isinstance(x, nnx.Variable))
  ema_sh = None if abstract_state.ema_params is None else params_sh
  return abstract_state.replace(step=replicated, params=params_sh, opt_state=opt_sh,
                                ema_params=ema_sh)


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_rows(rows: int, mesh) -> None:
  ways = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if rows % ways:
    raise MeshError(f'the batch has {rows} rows (batch_tokens // data.max_length) but the mesh '
                    f'splits it {ways} ways (mesh.data × mesh.fsdp): make batch_tokens a multiple '
                    f'of {ways} × data.max_length')
  if rows % jax.process_count():
    raise MeshError(f'the batch has {rows} rows, not divisible by {jax.process_count()} processes')


def global_batch(local_batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Assembles each process's rows into one global batch sharded along the batch axes."""
  sharding = batch_sharding(mesh)
  def one(x):
    global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
    return jax.make_array_from_process_local_data(sharding, x, global_shape)
  return {k: one(v) for k, v in local_batch.items()}


def to_host(tree):
  """NumPy values of (possibly multi-host) arrays; every process gets the whole value."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying shardings: the restore target for orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_tree, shardings)


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """jax.distributed.initialize for multi-process runs (flags, else JAX's env detection).

  Returns True when a multi-process runtime was started. Single-process runs
  (no flags, no cluster environment) are left alone.
  """
  if coordinator_address or (num_processes and num_processes > 1):
    # Must run before anything touches a backend; gloo lets CPU processes all-reduce
    # (GPU/TPU runs ignore the setting).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  return False


def describe(tree_of_shardings) -> dict[str, Any]:
  """{param path: PartitionSpec} for logs and tests."""
  flat = jax.tree_util.tree_flatten_with_path(tree_of_shardings)[0]
  return {jax.tree_util.keystr(path): s.spec for path, s in flat}
