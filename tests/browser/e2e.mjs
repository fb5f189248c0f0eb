// The web page end to end in headless Chromium: sign up, upload with progress
// bars (a small file in one request, a large one in chunks hashed in a worker),
// list, sort, rename, download (same bytes), mkdir, move, instant upload, delete,
// a file name that is an XSS payload, and a FIFO listed with its type.
// Usage: node e2e.mjs BASE_URL SCRATCH_DIR
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, signUp, check } from './lib.mjs';

const [base, scratch] = process.argv.slice(2);
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

const browser = await launch();
const context = await browser.newContext({ acceptDownloads: true });
const page = await context.newPage();
const alerts = [];
const pageErrors = [];
page.on('pageerror', (err) => pageErrors.push(String(err)));
// Answers for prompt() and confirm(); any alert() is a script the page did not mean to run.
const answers = [];
page.on('dialog', async (dialog) => {
  if (dialog.type() === 'alert') {
    alerts.push(dialog.message());
    await dialog.dismiss();
  } else {
    await dialog.accept(answers.shift());
  }
});

const rows = () => page.$$eval('#entries tr', (trs) => trs.map((tr) => tr.dataset.name));
async function waitRow(name, present = true) {
  await page.waitForFunction(
    ([n, p]) => [...document.querySelectorAll('#entries tr')].some((tr) => tr.dataset.name === n) === p,
    [name, present],
  );
}
async function rowButton(name, label) {
  const row = page.locator('#entries tr').filter({ has: page.locator('td.name', { hasText: name }) });
  return row.getByRole('button', { name: label });
}

try {
  await signUp(page, base, 'webuser', 'a good password');
  check((await page.textContent('#who')) === 'webuser', 'the user name is shown');
  check((await page.textContent('#usage')).includes('used'), 'the usage is shown');

  // Uploads: a small file (one request) and a 9 MiB one (chunked, hashed in a worker).
  const small = randomBytes(100 * 1024);
  const large = randomBytes(9 * 1024 * 1024 + 123);
  writeFileSync(join(scratch, 'small.bin'), small);
  writeFileSync(join(scratch, 'large.bin'), large);
  await page.setInputFiles('#pick-files', [join(scratch, 'small.bin'), join(scratch, 'large.bin')]);
  await page.waitForFunction(() => document.querySelectorAll('#uploads li[data-state=done]').length === 2, null, { timeout: 120000 });
  const bars = await page.$$eval('#uploads li progress', (ps) => ps.map((p) => p.value));
  check(bars.length === 2 && bars.every((v) => v === 1), 'each upload has a full progress bar: ' + bars);
  await waitRow('small.bin');
  await waitRow('large.bin');

  // Sorting by size puts the small file first, then (descending) last.
  await page.click('button.sort[data-key=size]');
  check((await rows()).join() === 'small.bin,large.bin', 'ascending by size: ' + (await rows()));
  await page.click('button.sort[data-key=size]');
  check((await rows()).join() === 'large.bin,small.bin', 'descending by size: ' + (await rows()));

  // Rename, then download: the same bytes come back.
  answers.push('renamed.bin');
  await (await rowButton('large.bin', 'Rename')).click();
  await waitRow('renamed.bin');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('#entries tr[data-name="renamed.bin"] a'),
  ]);
  check(download.suggestedFilename() === 'renamed.bin', 'download name: ' + download.suggestedFilename());
  const saved = join(scratch, 'downloaded.bin');
  await download.saveAs(saved);
  check(sha256(readFileSync(saved)) === sha256(large), 'downloaded bytes equal the upload');

  // A folder, and a move into it.
  answers.push('folder');
  await page.click('#mkdir');
  await waitRow('folder');
  answers.push('/folder');
  await (await rowButton('renamed.bin', 'Move')).click();
  await waitRow('renamed.bin', false);
  await page.click('#entries tr[data-name="folder"] button.open');
  await waitRow('renamed.bin');

  // The same content again is an instant upload once the server has hashed it.
  writeFileSync(join(scratch, 'copy.bin'), large);
  let instant = false;
  for (let attempt = 0; attempt < 20 && !instant; attempt++) {
    await page.waitForTimeout(500);
    await page.setInputFiles('#pick-files', [join(scratch, 'copy.bin')]);
    await page.waitForFunction(
      (n) => document.querySelectorAll('#uploads li[data-state=done], #uploads li[data-state=failed]').length === n,
      3 + attempt, { timeout: 60000 },
    );
    instant = (await page.$$eval('#uploads li', (lis) => lis[lis.length - 1].textContent)).includes('instant');
  }
  check(instant, 'a second upload of the same content is instant');

  // Delete, with the confirmation accepted.
  answers.push(undefined);
  await (await rowButton('copy.bin', 'Delete')).click();
  await waitRow('copy.bin', false);

  // A name that is HTML: shown as text, no element made, no script run.
  await page.click('#crumbs button:first-child');
  const evil = '<img src=x onerror=alert(1)>.txt';
  await page.setInputFiles('#pick-files', { name: evil, mimeType: 'text/plain', buffer: Buffer.from('hello') });
  await waitRow(evil);
  await page.waitForTimeout(500);
  check((await page.$$('#entries img, #uploads img')).length === 0, 'no <img> element was created');
  const shown = await page.$eval('#entries tr[data-name^="<img"] a', (a) => a.textContent);
  check(shown === evil, 'the name is shown as text: ' + shown);
  check(alerts.length === 0, 'no script ran: ' + alerts);
  check(pageErrors.length === 0, 'no page errors: ' + pageErrors);

  // A FIFO (made through the API, as a mount's mkfifo does) is listed with its
  // type, never as a download link.
  await page.evaluate(async () => {
    const s = await (await fetch('/api/v1/web/session')).json();
    const r = await fetch(`/api/v1/nodes/${s.user.root_ino}/children`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Pan-CSRF': s.csrf },
      body: JSON.stringify({ name: 'pipe', kind: 'fifo', mode: 420 }),
    });
    if (r.status !== 201) throw new Error('creating a FIFO: ' + r.status);
  });
  await page.reload();
  await waitRow('pipe');
  const fifo = await page.$eval('#entries tr[data-name="pipe"] td.name', (td) => ({
    text: td.textContent,
    links: td.querySelectorAll('a').length,
  }));
  check(fifo.links === 0 && fifo.text === 'pipe (pipe)', 'a FIFO is listed with its type: ' + JSON.stringify(fifo));

  // Signing out forgets the session: a reload shows the sign-in form.
  await page.click('#signout');
  await page.reload();
  await page.waitForSelector('#auth:not([hidden])');
  console.log('browser e2e: ok');
} finally {
  await browser.close();
}
