import tseslint from 'typescript-eslint';

const ORT_IMPORT = { name: 'onnxruntime-node', message: "import ort from src/model/ort.js (it turns onnxruntime's telemetry off first)", allowTypeImports: true };
const SHARP_IMPORT = { name: 'sharp', message: 'import sharp from src/image/sharp.js (it loads the CommonJS build, 2× faster than the ESM one)', allowTypeImports: true };

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', '.cache/**', 'tmp/**', 'models/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // onnxruntime-node is loaded through src/model/ort.ts, which turns ORT's telemetry off first.
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { paths: [ORT_IMPORT], patterns: [] }],
    },
  },
  {
    // In xfer itself, sharp too goes through its loader (src/image/sharp.ts: the CJS build loads 2× faster).
    files: ['src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { paths: [ORT_IMPORT, SHARP_IMPORT], patterns: [] }],
    },
  },
);
