/**
 * Process-wide settings of sharp for the commands that decode images (extract, predict, classify).
 * They belong to the application, not to the library: `import 'xfer'` leaves sharp as its caller set it.
 * - libvips' operation cache off: it keeps recent operations and their images in case the same one
 *   runs again on the same input, which never happens when every image is decoded once.
 * - one libvips thread per image: images are decoded many at once (one per libuv thread, sized to
 *   the cores by bin/xfer.js), so threads within an image would only oversubscribe the cores.
 */
export async function configureSharpForBatchDecoding(): Promise<void> {
  const sharp = (await import('sharp')).default;
  sharp.cache(false);
  sharp.concurrency(1);
}
