// ESM and CommonJS builds with declarations, by tsc alone: dist/esm (the package is
// "type": "module") and dist/cjs, marked CommonJS by a package.json of its own.

import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync('dist', { recursive: true, force: true });
for (const project of ['tsconfig.json', 'tsconfig.cjs.json']) {
  const r = spawnSync(process.execPath, [tsc, '-p', project], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n');
