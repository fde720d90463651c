import tseslint from 'typescript-eslint';

const ORT_IMPORT = { name: 'onnxruntime-node', message: "import ort from src/model/ort.js (it turns onnxruntime's telemetry off first)", allowTypeImports: true };

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', '.cache/**', 'tmp/**', 'models/**', '.venv-bench/**'] },
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
    files: ['src/model/ort.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': 'off' },
  },
);
