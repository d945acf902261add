"""benchmarks/hlo_profile.py (what profile_step.py and profile_flax_wmt_step.py share): HLO parsing
and categories (the trace itself is a benchmark run)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # for `benchmarks`

from benchmarks.hlo_profile import categorise, instruction_ops, parse_hlo  # noqa: E402

# Cut from a real train step's compiled.as_text() (S preset, vocab 8192), metadata removed.
HLO = """
%fused_computation.179 (param_0.218: f32[128,32,8192], param_1.227: f32[]) -> f32[128,32,8192] {
  %param_0.218 = f32[128,32,8192]{2,1,0} parameter(0)
  %param_1.227 = f32[] parameter(1)
  %reduce_max.1 = f32[128,32]{1,0} reduce(%param_0.218, %param_1.227), dimensions={2}, to_apply=%region_53.64
  ROOT %sub.1092 = f32[128,32,8192]{2,1,0} broadcast(%reduce_max.1), dimensions={0,1}
}

%fused_computation.180 (param_0.1: f32[4096,256], param_1.1: f32[8192,256]) -> f32[4096,8192] {
  %param_0.1 = f32[4096,256]{1,0} parameter(0)
  %param_1.1 = f32[8192,256]{1,0} parameter(1)
  ROOT %dot.1 = f32[4096,8192]{1,0} dot(%param_0.1, %param_1.1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

%fused_computation.12 (param_0.5: f32[4096,256], param_1.5: f32[256,1024]) -> f32[4096,1024] {
  %param_0.5 = f32[4096,256]{1,0} parameter(0)
  %param_1.5 = f32[256,1024]{1,0} parameter(1)
  ROOT %dot.2 = f32[4096,1024]{1,0} dot(%param_0.5, %param_1.5), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.7 (param_0.9: f32[128,32,4,64]) -> f32[128,4,32,64] {
  %param_0.9 = f32[128,32,4,64]{3,2,1,0} parameter(0)
  ROOT %transpose.3 = f32[128,4,32,64]{3,2,1,0} transpose(%param_0.9), dimensions={0,2,1,3}
}

%fused_computation.8 (param_0.3: u32[4096,256]) -> u32[4096,256] {
  %param_0.3 = u32[4096,256]{1,0} parameter(0)
  %constant.1 = u32[] constant(13)
  %broadcast.1 = u32[4096,256]{1,0} broadcast(%constant.1), dimensions={}
  %shift-left.1 = u32[4096,256]{1,0} shift-left(%param_0.3, %broadcast.1)
  ROOT %xor.1 = u32[4096,256]{1,0} xor(%shift-left.1, %param_0.3)
}

%fused_computation.9 (param_0.4: f32[4096,256], param_1.4: f32[4096,256]) -> f32[4096,256] {
  %param_0.4 = f32[4096,256]{1,0} parameter(0)
  %param_1.4 = f32[4096,256]{1,0} parameter(1)
  ROOT %add.4 = f32[4096,256]{1,0} add(%param_0.4, %param_1.4)
}

ENTRY %main.334 (x.1: f32[4096,256], e.1: f32[8192,256], w.1: f32[256,1024], u.1: u32[4096,256]) -> f32[] {
  %x.1 = f32[4096,256]{1,0} parameter(0)
  %ynn_fusion.180 = f32[4096,8192]{1,0} fusion(%x.1, %e.1), kind=kCustom, calls=%fused_computation.180
  %bitcast.349 = f32[128,32,8192]{2,1,0} bitcast(%ynn_fusion.180)
  %ynn_fusion.179 = f32[128,32,8192]{2,1,0} fusion(%bitcast.349, %constant.250), kind=kCustom, calls=%fused_computation.179
  %ynn_fusion.12 = f32[4096,1024]{1,0} fusion(%x.1, %w.1), kind=kCustom, calls=%fused_computation.12
  %transpose_fusion = f32[128,4,32,64]{3,2,1,0} fusion(%bitcast.7), kind=kLoop, calls=%fused_computation.7
  %xor_fusion = u32[4096,256]{1,0} fusion(%u.1), kind=kLoop, calls=%fused_computation.8
  %add_fusion = f32[4096,256]{1,0} fusion(%x.1, %x.1), kind=kLoop, calls=%fused_computation.9
  %copy.5 = f32[256,4096]{0,1} copy(%x.1)
  ROOT %reduce.9 = f32[] reduce(%add_fusion, %constant.1), dimensions={0,1}, to_apply=%region_1.2
}
"""


def _category(name, calls, bodies):
  return categorise(instruction_ops(name, calls, bodies), vocab=8192)


def test_each_thunk_lands_in_the_category_of_what_it_computes():
  calls, bodies = parse_hlo(HLO)
  assert calls['ynn_fusion.180'] == 'fused_computation.180'
  assert {name: _category(name, calls, bodies) for name in (
      'ynn_fusion.180', 'ynn_fusion.12', 'ynn_fusion.179', 'transpose_fusion', 'xor_fusion',
      'add_fusion', 'copy.5')} == {
          'ynn_fusion.180': 'matmul: output projection',  # the logits: vocab is a dimension
          'ynn_fusion.12': 'matmul',
          'ynn_fusion.179': '[B, T, V] elementwise',      # log-softmax's max, broadcast back
          'transpose_fusion': 'layout copies',
          'xor_fusion': 'dropout RNG',                    # threefry's shifts and xors
          'add_fusion': 'other elementwise',
          'copy.5': 'layout copies',                      # an unfused op is read on its own
      }
