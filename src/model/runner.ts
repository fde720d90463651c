/**
 * A tapped backbone ready to run: resolve the model, get its tap model (in-graph preprocessing:
 * uint8 NHWC pixels in, float32 pooled features out; cached on disk, see tap-cache.ts), and open it
 * on the chosen execution provider.
 */
import type { DeviceOptions } from './session.js';
import { prepareTappedBackbone, type PrepareOptions } from './prepare.js';
import { openPreparedBackbone, type TappedBackbone } from './tapped.js';
import type { Pool, TapRequest } from './taps.js';

export type { TapRequest, Pool, DeviceOptions };
export { openPreparedBackbone, type PreparedBackbone, type TappedBackbone, type TapOutput } from './tapped.js';
export { prepareTappedBackbone, type PrepareOptions } from './prepare.js';

export interface OpenOptions extends PrepareOptions {
  device?: DeviceOptions;
}

/** Open a backbone with taps; see TappedBackbone. */
export async function openTappedBackbone(spec: string, opts: OpenOptions): Promise<TappedBackbone> {
  return openPreparedBackbone(await prepareTappedBackbone(spec, opts), opts.device, opts.onNotice);
}
