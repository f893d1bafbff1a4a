// Builds and starts a real `ecosire serve` for the type generator and the tests.
//
// The binary is the debug build of this checkout, in the same target folder CI uses, so a test
// run never tests a stale server: `buildServer()` asks cargo, which answers at once when nothing
// changed. ECOSIRE_BIN points at another binary instead (and skips the build).
//
// As a command: `node scripts/server.mjs --build` builds and exits (the first step of
// `npm test`, so the test files themselves never compile anything).

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

const targetDir = () =>
  process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'ecosire-ci-target');

export function serverBinary() {
  return process.env.ECOSIRE_BIN || join(targetDir(), 'debug', 'ecosire');
}

export function buildServer() {
  if (process.env.ECOSIRE_BIN) return;
  const r = spawnSync('cargo', ['build', '--locked', '--bin', 'ecosire'], {
    cwd: repoRoot,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir() },
  });
  if (r.status !== 0) throw new Error(`cargo build failed (exit ${r.status ?? r.signal})`);
}

export const ADMIN_EMAIL = 'admin@sdk.test';
export const ADMIN_PASSWORD = 'sdk-admin-password';

/**
 * Starts a server on 127.0.0.1:0 with its own database, keys and mail folder in a temp dir.
 * `env` adds or overrides variables (rate limits are off unless a test turns them on).
 * `restart()` starts the same server again (same database, keys and port) after `stop()`;
 * `close()` stops it and removes the temp dir.
 */
export async function startServer({ env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ecosire-sdk-'));
  const serverEnv = {
    ...process.env,
    ECOSIRE_BIND: '127.0.0.1:0',
    DATABASE_URL: `sqlite://${join(dir, 'ecosire.db')}`,
    ECOSIRE_KEYS_DIR: join(dir, 'keys'),
    ECOSIRE_MAIL_DIR: join(dir, 'mail'),
    ECOSIRE_ADMIN_EMAIL: ADMIN_EMAIL,
    ECOSIRE_ADMIN_PASSWORD: ADMIN_PASSWORD,
    ECOSIRE_COOKIE_SECURE: 'false',
    ECOSIRE_RATE_LIMITS: 'off',
    ECOSIRE_LOG_FORMAT: 'text',
    RUST_LOG: 'warn',
    ...env,
  };
  const server = { dir, child: null, origin: '', baseUrl: '', stderr: '' };

  server.restart = async () => {
    // Back on the same port, so clients made before the restart reach it again.
    const bind = server.origin ? server.origin.replace('http://', '') : serverEnv.ECOSIRE_BIND;
    const child = spawn(serverBinary(), ['serve'], {
      cwd: dir,
      env: { ...serverEnv, ECOSIRE_BIND: bind },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server.child = child;
    server.stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s) => (server.stderr += s));
    server.origin = await new Promise((resolveOrigin, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (s) => {
        out += s;
        const m = /ECOSIRE API listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) resolveOrigin(m[1]);
      });
      child.once('exit', (code, signal) =>
        reject(new Error(`ecosire serve exited (${code ?? signal}) before listening:\n${server.stderr}`)),
      );
      child.once('error', reject);
    });
    server.baseUrl = `${server.origin}/api`;
    return server;
  };

  /** Runs another `ecosire` command on this server's database and keys; returns its stdout. */
  server.cli = (...args) => {
    const r = spawnSync(serverBinary(), args, { cwd: dir, env: serverEnv, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ecosire ${args.join(' ')} failed:\n${r.stderr}`);
    return r.stdout;
  };

  server.stop = async () => {
    const child = server.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };

  server.close = async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    return await server.restart();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv.includes('--build')) {
  buildServer();
}
