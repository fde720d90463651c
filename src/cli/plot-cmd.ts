/** `xfer plot --features <dir>`: a 2-D PCA or UMAP map of a feature folder, coloured by class (heads/feature-map.ts). */
import { Option, type Command } from 'commander';
import { parseNonNegativeInt } from './args.js';

export function registerPlotCommand(program: Command): void {
  program
    .command('plot')
    .description('draw a 2-D map (PCA or UMAP) of a feature folder written by `xfer extract`, coloured by class, as PNG')
    .requiredOption('--features <dir>', 'feature folder')
    .option('--layers <names>', 'layer(s) to use, comma-separated (default: the only layer)', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--split <name>', 'train | val | test | all', 'all')
    .addOption(new Option('--method <method>', 'pca (linear) | umap (neighbourhoods, umap-js; seeded by --seed)').choices(['pca', 'umap']).default('pca'))
    .option('--seed <n>', 'seed for the randomised PCA and UMAP', '0')
    .option('--out <file.png>', 'PNG to write (default: <features>/<method>.png)')
    .action(async (o: { features: string; layers?: string[]; split: string; method: 'pca' | 'umap'; seed: string; out?: string }) => {
      const { releaseKernel } = await import('../heads/kernel/matmul.js');
      const { plotFeatureMap } = await import('../heads/feature-map.js');
      try {
        const path = await import('node:path');
        const seed = parseNonNegativeInt(o.seed, '--seed');
        const r = await plotFeatureMap({ features: o.features, layers: o.layers, split: o.split, method: o.method, seed, out: o.out ?? path.join(o.features, `${o.method}.png`) });
        const pcs = `PC1 and PC2 explain ${(100 * r.explained[0]).toFixed(1)}% and ${(100 * r.explained[1]).toFixed(1)}% of the variance`;
        process.stdout.write(`wrote ${r.file}: ${r.method.toUpperCase()} of ${r.rows} rows, ${r.classes} classes${r.method === 'pca' ? `; ${pcs}` : ''}\n`);
      } finally {
        await releaseKernel();
      }
    });
}
