/** `xfer plot --features <dir>`: a 2-D PCA map of a feature folder, coloured by class (heads/feature-map.ts). */
import type { Command } from 'commander';

export function registerPlotCommand(program: Command): void {
  program
    .command('plot')
    .description('draw a 2-D map (PCA) of a feature folder written by `xfer extract`, coloured by class, as PNG')
    .requiredOption('--features <dir>', 'feature folder')
    .option('--layers <names>', 'layer(s) to use, comma-separated (default: the only layer)', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--split <name>', 'train | val | test | all', 'all')
    .option('--out <file.png>', 'PNG to write (default: <features>/pca.png)')
    .action(async (o: { features: string; layers?: string[]; split: string; out?: string }) => {
      const { releaseKernel } = await import('../heads/kernel/matmul.js');
      const { plotFeatureMap } = await import('../heads/feature-map.js');
      try {
        const path = await import('node:path');
        const r = await plotFeatureMap({ features: o.features, layers: o.layers, split: o.split, out: o.out ?? path.join(o.features, 'pca.png') });
        process.stdout.write(`wrote ${r.file}: PCA of ${r.rows} rows, ${r.classes} classes; PC1 and PC2 explain ${(100 * r.explained[0]).toFixed(1)}% and ${(100 * r.explained[1]).toFixed(1)}% of the variance\n`);
      } finally {
        await releaseKernel();
      }
    });
}
