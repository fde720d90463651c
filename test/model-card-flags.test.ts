import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyCardFlags, hasCardFlags } from '../src/model/card-flags.js';
import { resolveBackbone } from '../src/model/registry.js';
import { XferError } from '../src/errors.js';

test('card flags build a card for a model without one (torchvision defaults + overrides)', () => {
  const c = applyCardFlags(null, { size: '299', mean: '0.5,0.5,0.5', std: '0.5,0.5,0.5', resize: 'squash' }, 'my_net');
  assert.equal(c.id, 'my_net');
  assert.deepEqual(c.input.size, [299, 299]);
  assert.deepEqual(c.input.mean, [0.5, 0.5, 0.5]);
  assert.equal(c.input.layout, 'NCHW');
  assert.equal(c.resize.policy, 'squash');
  assert.equal(c.resize.crop_pct, 1, 'a squashed image is not cropped: no 0.875 recorded');
  assert.equal(applyCardFlags(null, { resize: 'squash', cropPct: '0.9' }, 'my_net').resize.crop_pct, 0.9, 'an explicit --crop-pct is kept');
  assert.equal(hasCardFlags({}), false);
});

test('card flags override a card and are validated', async () => {
  const b = await resolveBackbone('mobilenet_v2', { cardFlags: { channelOrder: 'BGR', cropPct: '0.9', resize: 'crop' } });
  assert.equal(b.card?.input.channel_order, 'BGR');
  assert.equal(b.card?.resize.crop_pct, 0.9);
  assert.equal(b.card?.taps?.default, 'out_relu', 'other fields kept');
  assert.throws(() => applyCardFlags(null, { mean: '1,2' }, 'x'), (e: unknown) => e instanceof XferError && /"input\.mean" must be 3 numbers/.test(e.message));
  assert.throws(() => applyCardFlags(null, { cropPct: '1.5' }, 'x'), /"resize\.crop_pct" must be in \(0, 1\]/);
});
