/**
 * Model cards from command-line flags: for a user's own .onnx without a card file, or to override
 * single fields of a card (`--mean`, `--size`, ...). The result is validated like a card file.
 */
import { validateCard, type ModelCard } from './card.js';

export interface CardFlags {
  size?: string;
  layout?: string;
  channelOrder?: string;
  inputDtype?: string;
  range?: string;
  mean?: string;
  std?: string;
  resize?: string;
  cropPct?: string;
  interpolation?: string;
  inputName?: string;
}

function nums(v: string): number[] {
  return v.split(',').map((s) => (s.trim() === '' ? NaN : Number(s)));
}

/** True when any card flag was given. */
export function hasCardFlags(f: CardFlags): boolean {
  return [f.size, f.layout, f.channelOrder, f.inputDtype, f.range, f.mean, f.std, f.resize, f.cropPct, f.interpolation, f.inputName].some((v) => v !== undefined);
}

/**
 * Apply flags over a card (or over ImageNet/torchvision defaults when there is none) and validate.
 * `id` names the model for cards built from flags alone.
 */
export function applyCardFlags(card: ModelCard | null, f: CardFlags, id: string): ModelCard {
  const base: ModelCard = card
    ? structuredClone(card)
    : {
        id,
        description: `${id} (card from command-line flags)`,
        source: 'user-supplied model',
        license: 'unknown',
        input: { size: [224, 224], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
        resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
      };
  const obj = base as unknown as { input: Record<string, unknown>; resize: Record<string, unknown> };
  if (f.size !== undefined) {
    const s = nums(f.size);
    obj.input.size = s.length === 1 ? [s[0], s[0]] : s;
  }
  if (f.layout !== undefined) obj.input.layout = f.layout;
  if (f.channelOrder !== undefined) obj.input.channel_order = f.channelOrder;
  if (f.inputDtype !== undefined) obj.input.dtype = f.inputDtype;
  if (f.range !== undefined) obj.input.range = nums(f.range);
  if (f.mean !== undefined) obj.input.mean = nums(f.mean);
  if (f.std !== undefined) obj.input.std = nums(f.std);
  if (f.inputName !== undefined) obj.input.name = f.inputName;
  if (f.resize !== undefined) obj.resize.policy = f.resize;
  // A squashed image is not cropped: record crop_pct 1 rather than a crop fraction that was never applied.
  if (f.resize === 'squash' && f.cropPct === undefined) obj.resize.crop_pct = 1;
  if (f.cropPct !== undefined) obj.resize.crop_pct = Number(f.cropPct);
  if (f.interpolation !== undefined) obj.resize.interpolation = f.interpolation;
  const dir = base.dir;
  const out = validateCard(base, card ? `card ${card.id} with command-line overrides` : 'command-line card flags');
  out.dir = dir;
  return out;
}
