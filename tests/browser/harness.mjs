// The browser tests' harness: Debian's chromium driven by playwright-core (never a browser that
// a test tool downloads), and the line protocol with the Rust test (tests/it/support/browser.rs)
// that started the script.
//
// A script asks the Rust side for what only it can do (start a server, publish an event, read
// the store) with `ask`: one line `jetpost-step {"do": ..., ...}` on stdout, answered by one JSON
// line on stdin. Every other stdout line is kept as log; stderr is shown when the test fails, so
// `step(name)` there tells how far a script got.
//
// A script wraps its body so that any error fails it, printed, with a non-zero exit:
//
//   import { open, ask, step, screenshot } from './harness.mjs';
//   async function main() {
//     const { page, errors, close } = await open();
//     try {
//       const { url } = await ask('portal-url');
//       step('sign in');
//       await page.goto(url);
//       ...
//       if (errors.length) throw new Error(`page errors:\n${errors.join('\n')}`);
//     } finally {
//       await close();
//     }
//   }
//   main().catch(err => { console.error(err); process.exit(1); });
//
// (The handlers installed below do the same for an error the script forgot to await.)

import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

// No sandbox: the tests run as root in containers, where chromium's sandbox cannot start. No
// GPU, no QUIC, and none of the background traffic (component updates, sync, first-run pages)
// a test machine has no use for and that could reach outside.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const fail = err => {
  console.error(err);
  process.exit(1);
};
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);

/**
 * Launches headless chromium with a fresh profile (a temporary user-data-dir, removed by
 * `close`) and returns its context, its first page, and `errors`: every console error (CSP
 * violations are reported there too) and uncaught page error of any page of the context, as
 * strings, for the script to check. `options` go to playwright's `launchPersistentContext`.
 */
export async function open(options = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), 'jetpost-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 800 },
      ...options,
    });
  } catch (err) {
    await rm(userDataDir, { recursive: true, force: true });
    throw err;
  }
  // Registered after the launch, so it runs after playwright's own exit handler has killed the
  // browser: a script that dies still leaves no profile behind.
  const removeProfile = () => rmSync(userDataDir, { recursive: true, force: true, maxRetries: 3 });
  process.on('exit', removeProfile);

  const errors = [];
  context.on('console', msg => {
    if (msg.type() === 'error') {
      const { url, lineNumber } = msg.location();
      errors.push(`console error: ${msg.text()}${url ? ` (${url}:${lineNumber})` : ''}`);
    }
  });
  context.on('weberror', webError => errors.push(`page error: ${webError.error().stack}`));

  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);

  let closed = false;
  async function close() {
    if (closed) return;
    closed = true;
    await context.close();
    await rm(userDataDir, { recursive: true, force: true, maxRetries: 3 });
    process.off('exit', removeProfile);
  }
  return { context, page, errors, close };
}

// One reader over stdin for the whole script. stdin is unref'd between questions: a pipe being
// read keeps node alive, even paused, and a script that is done must exit without waiting for
// the Rust side to close its stdin.
let lines;
function stdinLines() {
  if (lines) return lines;
  const queue = [];
  const waiting = [];
  let ended = false;
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  rl.on('line', line => {
    if (waiting.length) waiting.shift().resolve(line);
    else queue.push(line);
  });
  rl.on('close', () => {
    ended = true;
    for (const waiter of waiting.splice(0)) waiter.reject(new Error('stdin closed: the Rust test stopped answering'));
  });
  const reading = on => (on ? process.stdin.ref?.() : process.stdin.unref?.());
  reading(false);
  lines = {
    next() {
      if (queue.length) return Promise.resolve(queue.shift());
      if (ended) return Promise.reject(new Error('stdin closed: the Rust test stopped answering'));
      return new Promise((resolve, reject) => {
        waiting.push({
          resolve: line => {
            if (!waiting.length) reading(false);
            resolve(line);
          },
          reject,
        });
        reading(true);
      });
    },
  };
  return lines;
}

/**
 * Asks the Rust test to do `command` (with `args`) and returns its JSON answer; an answer with
 * an `error` field throws it.
 */
export async function ask(command, args = {}) {
  process.stdout.write(`jetpost-step ${JSON.stringify({ do: command, ...args })}\n`);
  const line = await stdinLines().next();
  let answer;
  try {
    answer = JSON.parse(line);
  } catch {
    throw new Error(`the answer to ${command} is not JSON: ${line}`);
  }
  if (answer && typeof answer === 'object' && 'error' in answer) {
    throw new Error(`${command}: ${typeof answer.error === 'string' ? answer.error : JSON.stringify(answer.error)}`);
  }
  return answer;
}

/**
 * Saves the viewport of `page` as `$SCREENSHOTS_DIR/<name>.png` when SCREENSHOTS_DIR is set
 * (returns the path); does nothing otherwise.
 */
export async function screenshot(page, name, options = {}) {
  const dir = process.env.SCREENSHOTS_DIR;
  if (!dir) return undefined;
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: false, ...options });
  return path;
}

/** Logs `step: <name>` to stderr: a failed test shows how far its script got. */
export function step(name) {
  console.error(`step: ${name}`);
}
