// Marks dist/cjs as CommonJS so that `require('tfjs-deep-adversarial')` loads it
// even though the package root declares "type": "module".
import {writeFileSync} from 'node:fs';
writeFileSync(new URL('../dist/cjs/package.json', import.meta.url), '{"type": "commonjs"}\n');
