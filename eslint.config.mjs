// Lint: typescript-eslint's strict, type-aware rules over every TypeScript file; `npm test` runs it.
// Formatting is prettier's job (.prettierrc.json); eslint checks meaning, not layout.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'coverage/', '.data/', 'bench/results/', 'eslint.config.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Numbers and booleans in template strings are how log and error messages are built here.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowNullish: true }],
      // `void promise` marks a deliberately unawaited promise (its errors are handled inside).
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // `(x) => void dispatch(...)` and `() => set.add(x)` callbacks are the idiom of the actor code.
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true, ignoreVoidOperator: true }],
      // With noUncheckedIndexedAccess, `xs[i]!` is the explicit, reviewed claim that an index exists.
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Values from the network, the database and the environment are checked even where a type says
      // they cannot be missing: the types describe what we expect, the checks what we defend against.
      '@typescript-eslint/no-unnecessary-condition': 'off',
    },
  },
  {
    // Tests and benchmarks read JSON answers and log lines whose shape is the thing under test.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/require-await': 'off',
    },
  },
);
