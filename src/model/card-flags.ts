/**
 * Model cards from command-line flags: for a user's own .onnx without a card file, or to override
 * single fields of a card (`--mean`, `--size`, ...). The result is validated like a card file.
 */
import { Option, type Command } from 'commander';
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

/** Add the card-override flags to a command. */
export function addCardFlags(cmd: Command): Command {
  return cmd
    .option('--size <h[,w]>', 'card override: network input size, e.g. 224 or 224,224')
    .addOption(new Option('--layout <layout>', 'card override: input layout').choices(['NCHW', 'NHWC']))
    .addOption(new Option('--channel-order <order>', 'card override: channel order').choices(['RGB', 'BGR']))
    .addOption(new Option('--input-dtype <dtype>', 'card override: input dtype').choices(['float32', 'float16']))
    .option('--range <lo,hi>', 'card override: range 0..255 pixels map to before mean/std, e.g. 0,1')
    .option('--mean <m1,m2,m3>', 'card override: per-channel mean (model channel order, range units)')
    .option('--std <s1,s2,s3>', 'card override: per-channel std')
    .addOption(new Option('--resize <policy>', 'card override: resize policy').choices(['crop', 'squash']))
    .option('--crop-pct <p>', 'card override: crop fraction, e.g. 0.875')
    .addOption(new Option('--interpolation <kind>', 'card override: resize interpolation').choices(['bilinear', 'bicubic', 'lanczos', 'nearest']))
    .option('--input-name <name>', 'card override: the model input that takes the image');
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
  if (f.cropPct !== undefined) obj.resize.crop_pct = Number(f.cropPct);
  if (f.interpolation !== undefined) obj.resize.interpolation = f.interpolation;
  const dir = base.dir;
  const out = validateCard(base, card ? `card ${card.id} with command-line overrides` : 'command-line card flags');
  out.dir = dir;
  return out;
}
