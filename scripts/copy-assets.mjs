// tsc compiles TypeScript only: copy the Lua scripts and the example product config next to the
// compiled modules that load them by relative path.
import { cpSync } from 'node:fs';

cpSync('src/redis/lua', 'dist/src/redis/lua', { recursive: true });
cpSync('src/config/product.example.yaml', 'dist/src/config/product.example.yaml');
