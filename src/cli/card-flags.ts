/** The card-override flags (--size, --mean, ...) of the commands that take a model; src/model/card-flags.ts applies them. */
import { Option, type Command } from 'commander';

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
