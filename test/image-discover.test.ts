/** Dataset discovery: ImageFolder (with and without splits), flat folders, CSV/JSONL lists, and their bad cases. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XferError } from '../src/errors.js';
import { discoverDataset, entrySource, parseCsv } from '../src/image/discover.js';
import { tempDir } from './helpers/tmp.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const hymenoptera = path.resolve(repoRoot, '../shared/datasets/hymenoptera');

let tmp = '';
before(async () => {
  tmp = await tempDir('xfer-discover-');
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Create files (contents irrelevant: discovery does not decode) under a new folder. */
async function tree(name: string, files: string[], dirs: string[] = []): Promise<string> {
  const root = path.join(tmp, name);
  await mkdir(root, { recursive: true });
  for (const d of dirs) await mkdir(path.join(root, d), { recursive: true });
  for (const f of files) {
    await mkdir(path.dirname(path.join(root, f)), { recursive: true });
    await writeFile(path.join(root, f), 'x');
  }
  return root;
}

test('ImageFolder: labels from class folders, nested files, sorted, empty class reported, non-images and hidden skipped', async () => {
  const root = await tree('if', ['dogs/b.png', 'cats/z.jpg', 'cats/a.JPG', 'dogs/sub/c.jpeg', 'dogs/notes.txt', 'README.md', 'cats/.hidden.jpg', '.ipynb_checkpoints/x.jpg'], ['empty']);
  const ds = await discoverDataset(root);
  assert.equal(ds.kind, 'imagefolder');
  assert.deepEqual(ds.labels, ['cats', 'dogs']);
  assert.deepEqual(
    ds.entries.map((e) => [e.path, e.label, e.labelIndex, e.split]),
    [
      ['cats/a.JPG', 'cats', 0, null],
      ['cats/z.jpg', 'cats', 0, null],
      ['dogs/b.png', 'dogs', 1, null],
      ['dogs/sub/c.jpeg', 'dogs', 1, null],
    ],
  );
  assert.equal(ds.entries[0].abs, path.join(root, 'cats/a.JPG'));
  assert.deepEqual(ds.emptyClasses, ['empty']);
  assert.ok(ds.warnings.some((w) => /empty has no images/.test(w)));
  assert.equal(ds.skippedFiles, 2);
});

test('ImageFolder with splits: root/<split>/<class>/ (valid → val)', async () => {
  const root = await tree('sp', ['train/ants/1.jpg', 'train/bees/2.jpg', 'valid/ants/3.jpg', 'test/4.jpg'], ['valid/bees']);
  const ds = await discoverDataset(root);
  assert.equal(ds.kind, 'imagefolder');
  assert.deepEqual(ds.labels, ['ants', 'bees']);
  assert.deepEqual(
    ds.entries.map((e) => [e.path, e.label, e.split]),
    [
      ['test/4.jpg', null, 'test'],
      ['train/ants/1.jpg', 'ants', 'train'],
      ['train/bees/2.jpg', 'bees', 'train'],
      ['valid/ants/3.jpg', 'ants', 'val'],
    ],
  );
  assert.deepEqual(ds.emptyClasses, ['valid/bees']);
});

test('flat folder: unlabelled, recursive; extension filter is configurable', async () => {
  const root = await tree('flat', ['a.jpg', 'b.webp', 'deep/c.avif', 'd.heic']);
  const ds = await discoverDataset(root);
  assert.equal(ds.kind, 'flat');
  assert.deepEqual(ds.labels, []);
  assert.deepEqual(ds.entries.map((e) => [e.path, e.label, e.split]), [
    ['a.jpg', null, null],
    ['b.webp', null, null],
    ['deep/c.avif', null, null],
  ]);
  const only = await discoverDataset(root, { extensions: ['heic'] });
  assert.deepEqual(only.entries.map((e) => e.path), ['d.heic']);
});

test('empty dataset → XferError (also for a folder with only non-images or only empty class folders)', async () => {
  const empty = await tree('empty', []);
  await assert.rejects(discoverDataset(empty), (e: unknown) => e instanceof XferError && /empty dataset, no images found/.test(e.message));
  const txt = await tree('txtonly', ['a.txt', 'b.csv.bak']);
  await assert.rejects(discoverDataset(txt), (e: unknown) => e instanceof XferError && /2 other file\(s\) did not match/.test(e.message));
  const classes = await tree('emptyclasses', [], ['a', 'b']);
  await assert.rejects(discoverDataset(classes), XferError);
  assert.equal((await discoverDataset(classes, { allowEmpty: true })).entries.length, 0);
  await assert.rejects(discoverDataset(path.join(tmp, 'does-not-exist')), (e: unknown) => e instanceof XferError && /dataset not found/.test(e.message));
});

test('symlinks are followed once: a loop back to the root does not recurse forever', async () => {
  const root = await tree('links', ['cats/a.jpg', 'elsewhere/b.jpg']);
  const target = await tree('outside-target', ['x.jpg']);
  await symlink(root, path.join(root, 'cats', 'loop'));
  await symlink(target, path.join(root, 'cats', 'ext'));
  await symlink(path.join(root, 'cats', 'a.jpg'), path.join(root, 'elsewhere', 'linked.jpg'));
  await symlink(path.join(root, 'nowhere'), path.join(root, 'elsewhere', 'broken'));
  await symlink(path.join(root, 'elsewhere', 'self'), path.join(root, 'elsewhere', 'self'));
  const ds = await discoverDataset(root);
  assert.deepEqual(ds.entries.map((e) => e.path), ['cats/a.jpg', 'cats/ext/x.jpg', 'elsewhere/b.jpg', 'elsewhere/linked.jpg']);
  assert.ok(ds.warnings.some((w) => /already visited/.test(w)));
  // A broken link without an image name is nothing to use (no error); a looping one is recorded.
  assert.deepEqual(ds.errors, [{ path: 'elsewhere/self', reason: 'symlink loop' }]);
});

test('a symlink named like an image is listed unresolved: broken or pointing at a folder, it is an entry its decode reports', async () => {
  const root = await tree('image-links', ['cats/a.jpg', 'dogs/b.jpg', 'folder/c.jpg']);
  await symlink(path.join(root, 'nowhere.jpg'), path.join(root, 'cats', 'broken.jpg'));
  await symlink(path.join(root, 'folder'), path.join(root, 'dogs', 'folder-link.jpg'));
  await symlink(path.join(root, 'cats', 'a.jpg'), path.join(root, 'dogs', 'linked.JPG'));
  const ds = await discoverDataset(root);
  assert.deepEqual(
    ds.entries.map((e) => [e.path, e.label]),
    [
      ['cats/a.jpg', 'cats'],
      ['cats/broken.jpg', 'cats'],
      ['dogs/b.jpg', 'dogs'],
      ['dogs/folder-link.jpg', 'dogs'],
      ['dogs/linked.JPG', 'dogs'],
      ['folder/c.jpg', 'folder'],
    ],
  );
  assert.deepEqual(ds.errors, []);
});

test('non-UTF-8 file and class names are kept (\\xNN in path, exact bytes in absBytes)', async () => {
  const root = path.join(tmp, 'utf');
  await mkdir(path.join(root, 'ok'), { recursive: true });
  const badDir = Buffer.concat([Buffer.from(`${root}/cl`), Buffer.from([0xfe])]);
  await mkdir(badDir);
  await writeFile(Buffer.concat([badDir, Buffer.from('/x'), Buffer.from([0xff]), Buffer.from('.jpg')]), 'x');
  await writeFile(path.join(root, 'ok', 'é.jpg'), 'x');
  const ds = await discoverDataset(root);
  assert.deepEqual(ds.labels, ['cl\\xfe', 'ok']);
  const bad = ds.entries.find((e) => e.label === 'cl\\xfe');
  assert.ok(bad);
  assert.equal(bad.path, 'cl\\xfe/x\\xff.jpg');
  assert.ok(Buffer.isBuffer(entrySource(bad)));
  assert.ok(existsSync(bad.absBytes as Buffer));
  const good = ds.entries.find((e) => e.label === 'ok');
  assert.equal(good?.path, 'ok/é.jpg');
  assert.equal(good?.absBytes, undefined);
  assert.equal(entrySource(good!), path.join(root, 'ok', 'é.jpg'));
});

test('CSV list: paths relative to the list file; outside / missing / bad split recorded, quotes parsed', async () => {
  const root = await tree('csv', ['data/a.jpg', 'data/b.jpg', 'data/c d.png']);
  await writeFile(path.join(tmp, 'secret.jpg'), 'x');
  const list = path.join(root, 'list.csv');
  await writeFile(
    list,
    [
      'path,label,split',
      'data/b.jpg,"bee, honey",train',
      'data/a.jpg,ant,val',
      '"data/c d.png",,test',
      '../secret.jpg,ant,train',
      '/etc/passwd,ant,train',
      'data/missing.jpg,ant,train',
      'data/a.jpg,ant,holdout',
      'data,ant,train',
      '',
    ].join('\r\n'),
  );
  const ds = await discoverDataset(list);
  assert.equal(ds.kind, 'list');
  assert.deepEqual(ds.labels, ['ant', 'bee, honey']);
  assert.deepEqual(ds.entries.map((e) => [e.path, e.label, e.labelIndex, e.split]), [
    ['data/a.jpg', 'ant', 0, 'val'],
    ['data/b.jpg', 'bee, honey', 1, 'train'],
    ['data/c d.png', null, null, 'test'],
  ]);
  const errs = Object.fromEntries(ds.errors.map((e) => [e.path, e.reason]));
  assert.equal(errs['../secret.jpg'], "outside the list file's folder (refused)");
  assert.equal(errs['/etc/passwd'], "outside the list file's folder (refused)");
  assert.equal(errs['data/missing.jpg'], 'file not found');
  assert.equal(errs['data/a.jpg'], 'unknown split "holdout" (use train, val or test)');
  assert.equal(errs.data, 'not a file');
});

test('JSONL list: bad lines recorded; duplicate entries reported; a list of only bad entries → XferError', async () => {
  const root = await tree('jsonl', ['x/1.jpg', 'x/2.jpg']);
  const list = path.join(root, 'list.jsonl');
  await writeFile(
    list,
    ['{"path":"x/2.jpg","label":"b"}', '{"path":"x/1.jpg","label":"a","split":"train"}', 'not json', '{"label":"a"}', '{"path":"x/1.jpg","label":"a"}', '{"path":"../../x.jpg"}'].join('\n'),
  );
  const ds = await discoverDataset(list);
  assert.deepEqual(ds.entries.map((e) => [e.path, e.label, e.split]), [
    ['x/1.jpg', 'a', 'train'],
    ['x/2.jpg', 'b', null],
  ]);
  const reasons = ds.errors.map((e) => `${e.path}: ${e.reason}`).sort();
  assert.deepEqual(reasons, [
    "../../x.jpg: outside the list file's folder (refused)",
    'list.jsonl:3: invalid JSON line',
    'list.jsonl:4: missing "path"',
    'x/1.jpg: listed more than once (later copy ignored)',
  ]);
  const bad = path.join(root, 'bad.csv');
  await writeFile(bad, 'path,label\n../outside.jpg,a\nmissing.jpg,b\n');
  await assert.rejects(discoverDataset(bad), (e: unknown) => e instanceof XferError && /empty dataset/.test(e.message) && /outside the list file's folder/.test(e.message));
  const nohdr = path.join(root, 'nohdr.csv');
  await writeFile(nohdr, 'file,label\nx/1.jpg,a\n');
  await assert.rejects(discoverDataset(nohdr), (e: unknown) => e instanceof XferError && /no "path" column/.test(e.message));
});

test('parseCsv handles quotes, escaped quotes, CRLF and multi-line cells', () => {
  assert.deepEqual(
    parseCsv('a,b\r\n"x, y","he said ""hi"""\n"multi\nline",z\n').map((r) => r.cells),
    [
      ['a', 'b'],
      ['x, y', 'he said "hi"'],
      ['multi\nline', 'z'],
    ],
  );
});

test('hymenoptera: 397 images, train/val splits, labels ants/bees', { skip: !existsSync(hymenoptera) && `${hymenoptera} not present` }, async () => {
  const ds = await discoverDataset(hymenoptera);
  assert.equal(ds.kind, 'imagefolder');
  assert.deepEqual(ds.labels, ['ants', 'bees']);
  assert.equal(ds.entries.length, 124 + 121 + 70 + 83);
  assert.equal(ds.entries.filter((e) => e.split === 'val').length, 153);
  assert.equal(ds.entries[0].path.startsWith('train/ants/'), true);
  assert.ok(ds.entries.some((e) => e.path === 'train/ants/imageNotFound.gif'));
});
