// Lints deploy/Dockerfile with dockerfile-utils (the Dockerfile linter of the
// VS Code Docker language server, from npm): unknown instructions, bad flags,
// malformed HEALTHCHECK/ARG/LABEL/COPY, and the like. Every diagnostic fails.
//   node lint_dockerfile.mjs TOOLS_DIR DOCKERFILE
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const [tools, file] = process.argv.slice(2);
const require = createRequire(path.resolve(tools, 'npm', 'node_modules', 'x.js'));
const { validate } = require('dockerfile-utils');
const text = readFileSync(file, 'utf8');
const diags = validate(text);
for (const d of diags)
  console.log(`FAIL ${file}:${d.range.start.line + 1}: ${d.message}`);
console.log(`dockerfile-utils: ${diags.length === 0 ? 1 : 0} passed, ${diags.length} failed`);
process.exit(diags.length === 0 ? 0 : 1);
