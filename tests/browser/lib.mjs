// Shared by the browser tests and scripts/screenshots.sh: Debian's Chromium,
// driven by playwright-core (which downloads no browser of its own).
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.PAN_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** Signs up (or in) through the page and waits for the file list. */
export async function signUp(page, base, username, password) {
  await page.goto(base + '/');
  await page.waitForSelector('#auth-form');
  check(!(await page.isVisible('#signout')) && !(await page.isVisible('#drive')), 'signed out: no account bar, no files');
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#signup');
  await page.waitForSelector('#drive:not([hidden])');
}

export function check(condition, message) {
  if (!condition) throw new Error('check failed: ' + message);
}
