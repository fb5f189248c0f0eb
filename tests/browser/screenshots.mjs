// Screenshots of the sign-in page and of a file list, for the README.
// Usage: node screenshots.mjs BASE_URL OUT_DIR
import { join } from 'node:path';
import { launch, signUp } from './lib.mjs';

const [base, out] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 600 } });
  await page.goto(base + '/');
  await page.waitForSelector('#auth:not([hidden])');
  await page.screenshot({ path: join(out, 'signin.png') });

  await signUp(page, base, 'demo', 'a demo password');
  page.on('dialog', (d) => d.accept('Photos'));
  await page.click('#mkdir');
  await page.waitForSelector('#entries tr[data-name="Photos"]');
  const files = [
    { name: 'report.pdf', size: 2300000 },
    { name: 'notes.txt', size: 5200 },
    { name: 'budget.xlsx', size: 48000 },
  ].map((f) => ({ name: f.name, mimeType: 'application/octet-stream', buffer: Buffer.alloc(f.size, 7) }));
  await page.setInputFiles('#pick-files', files);
  await page.waitForFunction(() => document.querySelectorAll('#uploads li[data-state=done]').length === 3);
  await page.waitForSelector('#entries tr[data-name="report.pdf"]');
  await page.screenshot({ path: join(out, 'files.png') });
  console.log('screenshots saved in ' + out);
} finally {
  await browser.close();
}
