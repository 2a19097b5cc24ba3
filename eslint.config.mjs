// Lint for the labextension's TypeScript (labextension/src, specs included).
// After the JupyterLab extension template's flat config; formatting is left to
// prettier (`jlpm prettier:check`), so eslint-config-prettier turns off every
// rule that would fight it.
import js from '@eslint/js';
import jupyterPlugin from '@jupyter/eslint-plugin';
import prettierConfig from 'eslint-config-prettier';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig([
  {
    ignores: ['node_modules', 'lib', 'sandbox_magic', '.venv', '**/*.js', '**/*.d.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  { plugins: { jupyter: jupyterPlugin } },
  jupyterPlugin.configs.recommended,
  {
    files: ['labextension/src/**/*.{ts,tsx}'],
    languageOptions: {
      globals: { ...globals.browser, ...globals.es2015 },
      sourceType: 'module'
    },
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: 'interface',
          format: ['PascalCase'],
          custom: { regex: '^I[A-Z]', match: true }
        }
      ],
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      // The panel's strings are English only (no ITranslator yet).
      'jupyter/no-untranslated-string': 'off',
      // The whole extension is a few kilobytes that activate() needs at once.
      'jupyter/prefer-lazy-imports': 'off',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error'
    }
  },
  {
    // The specs talk to fakes; `any` there stands for an untyped wire message.
    files: ['labextension/src/__tests__/**/*.ts'],
    languageOptions: { globals: { ...globals.jest, ...globals.node } },
    rules: { '@typescript-eslint/no-explicit-any': 'off' }
  },
  prettierConfig
]);
