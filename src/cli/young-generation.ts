/**
 * `xfer extract` and `xfer predict` keep V8 from doubling its young generation
 * (`--semi-space-growth-factor=1`, read by V8 each time it would double it, so it can be set once the
 * process runs; bin/xfer.js sets it on its first line). In these runs almost nothing the main thread
 * allocates outlives a scavenge (1–2 % in steady state: per-image sharp objects and buffers die
 * young), so a larger young generation buys nothing. V8 still enlarges it by other means (its new
 * space reached 8 or 16 MB in runs with the flag, 16 MB in every run without it), but later: the
 * peak-RSS step from 398 to 1990 images went +9.7 → +7.4 % and +9.2 → +5.9 % (two A/B sets), at the
 * same speed (×1.011, 6 alternating pairs). It applies to the whole process (V8 flags are global), so
 * the library leaves it to its callers.
 */
import v8 from 'node:v8';

export function keepYoungGenerationSmall(): void {
  v8.setFlagsFromString('--semi-space-growth-factor=1');
}
