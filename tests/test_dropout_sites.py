"""Dropout sites are keyed by name: a site's mask follows from what it is, not where it is."""
import zlib

import jax
import numpy as np

from transformer_jax.nn.dropout import dropout, site_key


def test_a_sites_key_is_its_name_folded_into_the_step_key():
  rng = jax.random.key(7)
  key = site_key(rng, 'self_attention/output')
  expected = jax.random.fold_in(rng, zlib.crc32(b'self_attention/output'))
  np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(expected))
  assert site_key(None, 'anything') is None  # evaluation: no dropout anywhere


def test_different_sites_draw_different_masks_and_the_same_site_the_same():
  rng, x = jax.random.key(0), np.ones((64, 64), np.float32)
  names = ['encoder/embedding', 'decoder/embedding', 'encoder/layer_0', 'decoder/layer_0',
           'self_attention/weights', 'self_attention/output', 'cross_attention/weights',
           'cross_attention/output', 'feed_forward/hidden', 'feed_forward/output']
  masks = {n: np.asarray(dropout(x, 0.5, site_key(rng, n))) != 0 for n in names}
  for i, a in enumerate(names):
    np.testing.assert_array_equal(masks[a], np.asarray(dropout(x, 0.5, site_key(rng, a))) != 0)
    for b in names[i + 1:]:
      agreement = (masks[a] == masks[b]).mean()
      assert 0.4 < agreement < 0.6, (a, b, agreement)  # independent halves agree half the time
