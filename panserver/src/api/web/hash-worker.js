// Hashes a file off the page's thread: the SHA-256 of each 4 MiB chunk (the
// upload session's chunk list) and the whole file's SHA-256 and SHA-1 (instant upload).
'use strict';
importScripts('/hashes.js');

const CHUNK = 4 * 1024 * 1024;

function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function chunkHash(bytes) {
  if (self.crypto && self.crypto.subtle) return toHex(await self.crypto.subtle.digest('SHA-256', bytes));
  return new Sha256().update(bytes).hex();
}

onmessage = async (event) => {
  const file = event.data.file;
  try {
    const whole256 = new Sha256();
    const whole1 = new Sha1();
    const chunks = [];
    for (let offset = 0; offset < file.size; offset += CHUNK) {
      const end = Math.min(offset + CHUNK, file.size);
      const bytes = new Uint8Array(await file.slice(offset, end).arrayBuffer());
      whole256.update(bytes);
      whole1.update(bytes);
      chunks.push({ sha256: await chunkHash(bytes), size: bytes.length });
      postMessage({ progress: end / file.size });
    }
    postMessage({ done: true, chunks, sha256: whole256.hex(), sha1: whole1.hex() });
  } catch (err) {
    postMessage({ error: String(err) });
  }
};
