// pan's web page: sign in, browse, upload (chunked, resumable, instant when the
// server has the content) and download. Names are only ever set as text, never HTML.
'use strict';

const API = '/api/v1';
// What the listing calls the nodes that have no content.
const SPECIAL_KINDS = { fifo: 'pipe', socket: 'socket', chardev: 'character device', blockdev: 'block device' };
const SMALL_FILE = 4 * 1024 * 1024; // sent in one request; larger files go in chunks
const PARALLEL_CHUNKS = 3;
const CHUNK_RETRIES = 4;

const state = {
  csrf: null,
  user: null,
  crumbs: [], // [{name, ino}], the root first
  entries: [],
  sort: { key: 'name', dir: 1 },
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.csrf) headers['X-Pan-CSRF'] = state.csrf;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const resp = await fetch(API + path, { method, headers, body: payload, credentials: 'same-origin' });
  if (!resp.ok) throw await errorOf(resp.status, () => resp.json());
  if (resp.status === 204) return null;
  return resp.json();
}

async function errorOf(status, readJson) {
  try {
    const body = await readJson();
    return new ApiError(status, body.code, body.message);
  } catch {
    return new ApiError(status, 'http_' + status, 'HTTP ' + status);
  }
}

/** PUT of a Blob with upload progress (fetch has none). */
function putBlob(path, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', API + path);
    xhr.setRequestHeader('X-Pan-CSRF', state.csrf);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.responseText ? JSON.parse(xhr.responseText) : null);
      else reject(await errorOf(xhr.status, async () => JSON.parse(xhr.responseText)));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'network error'));
    xhr.send(blob);
  });
}

function setStatus(text) {
  $('status').textContent = text;
}

function humanSize(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function encodePath(names) {
  return names.map(encodeURIComponent).join('/');
}

// ---- account ----

async function start() {
  wireEvents();
  try {
    const session = await api('GET', '/web/session');
    signedIn(session);
  } catch {
    showAuth();
  }
}

async function showAuth() {
  $('drive').hidden = true;
  $('account').hidden = true;
  $('auth').hidden = false;
  try {
    const config = await api('GET', '/web/config');
    $('signup').hidden = !config.signup;
  } catch {
    $('signup').hidden = true;
  }
}

function credentials() {
  return { username: $('username').value, password: $('password').value };
}

async function signIn() {
  $('auth-error').textContent = '';
  try {
    signedIn(await api('POST', '/web/signin', credentials()));
  } catch (err) {
    $('auth-error').textContent = err.message;
  }
}

async function signUp() {
  $('auth-error').textContent = '';
  try {
    await api('POST', '/signup', credentials());
    signedIn(await api('POST', '/web/signin', credentials()));
  } catch (err) {
    $('auth-error').textContent = err.message;
  }
}

async function signOut() {
  try { await api('POST', '/web/signout'); } catch { /* the cookie is cleared either way */ }
  state.csrf = null;
  state.user = null;
  $('password').value = '';
  showAuth();
}

function signedIn(session) {
  state.csrf = session.csrf;
  state.user = session.user;
  state.crumbs = [{ name: '', ino: session.user.root_ino }];
  $('auth').hidden = true;
  $('account').hidden = false;
  $('drive').hidden = false;
  showUser();
  refresh();
}

function showUser() {
  const u = state.user;
  $('who').textContent = u.username;
  const quota = u.quota_bytes > 0 ? ' of ' + humanSize(u.quota_bytes) : '';
  $('usage').textContent = humanSize(u.used_bytes) + quota + ' used, ' + u.used_files + ' files';
}

async function refreshUser() {
  try {
    state.user = await api('GET', '/user');
    showUser();
  } catch { /* usage is informative only */ }
}

// ---- browsing ----

function currentIno() {
  return state.crumbs[state.crumbs.length - 1].ino;
}

function currentPath() {
  return state.crumbs.slice(1).map((c) => c.name);
}

async function listAll(ino) {
  const entries = [];
  let after = null;
  do {
    const query = '?limit=1000' + (after === null ? '' : '&after=' + encodeURIComponent(after));
    const page = await api('GET', `/nodes/${ino}/children${query}`);
    entries.push(...page.entries);
    after = page.next ?? null;
  } while (after !== null);
  return entries;
}

async function refresh() {
  try {
    state.entries = await listAll(currentIno());
    render();
  } catch (err) {
    setStatus('Could not list the folder: ' + err.message);
  }
  refreshUser();
}

function sorted(entries) {
  const { key, dir } = state.sort;
  const value = (e) => (key === 'name' ? e.name : e.node[key]);
  return [...entries].sort((a, b) => {
    const aDir = a.node.kind === 'dir', bDir = b.node.kind === 'dir';
    if (aDir !== bDir) return aDir ? -1 : 1;
    const x = value(a), y = value(b);
    const c = typeof x === 'string' ? x.localeCompare(y) : x - y;
    return c * dir;
  });
}

function button(label, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}

function render() {
  const crumbs = $('crumbs');
  crumbs.replaceChildren();
  state.crumbs.forEach((c, i) => {
    crumbs.append(button(i === 0 ? 'Home' : c.name, () => {
      state.crumbs = state.crumbs.slice(0, i + 1);
      refresh();
    }));
    if (i < state.crumbs.length - 1) crumbs.append(' / ');
  });

  const body = $('entries');
  body.replaceChildren();
  for (const entry of sorted(state.entries)) {
    const row = document.createElement('tr');
    row.dataset.name = entry.name;
    const name = document.createElement('td');
    name.className = 'name';
    if (entry.node.kind === 'dir') {
      const open = button(entry.name + '/', () => {
        state.crumbs.push({ name: entry.name, ino: entry.node.ino });
        refresh();
      });
      open.className = 'open';
      name.append(open);
    } else if (entry.node.kind === 'file') {
      const link = document.createElement('a');
      link.href = API + '/files/' + encodePath([...currentPath(), entry.name]);
      link.download = entry.name;
      link.textContent = entry.name;
      name.append(link);
    } else if (entry.node.kind === 'symlink') {
      name.textContent = entry.name + ' → ' + (entry.node.target ?? '');
    } else {
      // FIFOs, sockets and devices have no content: shown with their type, never a link.
      name.textContent = entry.name;
      const kind = document.createElement('span');
      kind.className = 'kind';
      kind.textContent = ' (' + (SPECIAL_KINDS[entry.node.kind] ?? entry.node.kind) + ')';
      name.append(kind);
    }
    const size = document.createElement('td');
    size.className = 'size';
    size.textContent = entry.node.kind === 'file' || entry.node.kind === 'symlink' ? humanSize(entry.node.size) : '';
    const mtime = document.createElement('td');
    mtime.textContent = new Date(entry.node.mtime / 1e6).toLocaleString();
    const actions = document.createElement('td');
    actions.className = 'actions';
    actions.append(
      button('Rename', () => renameEntry(entry)),
      button('Move', () => moveEntry(entry)),
      button('Delete', () => deleteEntry(entry)),
    );
    row.append(name, size, mtime, actions);
    body.append(row);
  }
  $('empty').hidden = state.entries.length > 0;
}

// ---- changes ----

async function makeDir() {
  const name = prompt('New folder name');
  if (!name) return;
  try {
    await api('POST', `/nodes/${currentIno()}/children`, { name, kind: 'dir', mode: 0o755 });
    setStatus('Created ' + name);
  } catch (err) {
    setStatus('Could not create the folder: ' + err.message);
  }
  refresh();
}

async function renameEntry(entry) {
  const name = prompt('New name', entry.name);
  if (!name || name === entry.name) return;
  try {
    await api('POST', '/rename', {
      parent: currentIno(), name: entry.name, new_parent: currentIno(), new_name: name, mode: 'noreplace',
    });
    setStatus('Renamed to ' + name);
  } catch (err) {
    setStatus('Could not rename: ' + err.message);
  }
  refresh();
}

async function resolveDir(path) {
  const names = path.split('/').filter((s) => s !== '');
  if (names.length === 0) return state.user.root_ino;
  const node = await api('GET', '/stat/' + encodePath(names));
  if (node.kind !== 'dir') throw new ApiError(409, 'not_dir', 'not a folder');
  return node.ino;
}

async function moveEntry(entry) {
  const target = prompt('Move to folder (a path such as /docs/old; / is Home)', '/');
  if (target === null) return;
  try {
    const newParent = await resolveDir(target);
    await api('POST', '/rename', {
      parent: currentIno(), name: entry.name, new_parent: newParent, new_name: entry.name, mode: 'noreplace',
    });
    setStatus('Moved ' + entry.name);
  } catch (err) {
    setStatus('Could not move: ' + err.message);
  }
  refresh();
}

async function removeTree(parent, entry) {
  if (entry.node.kind === 'dir') {
    for (const child of await listAll(entry.node.ino)) await removeTree(entry.node.ino, child);
  }
  const dir = entry.node.kind === 'dir' ? '?dir=true' : '';
  await api('DELETE', `/nodes/${parent}/children/${encodeURIComponent(entry.name)}${dir}`);
}

async function deleteEntry(entry) {
  const what = entry.node.kind === 'dir' ? 'the folder ' + entry.name + ' and everything in it' : entry.name;
  if (!confirm('Delete ' + what + '?')) return;
  try {
    await removeTree(currentIno(), entry);
    setStatus('Deleted ' + entry.name);
  } catch (err) {
    setStatus('Could not delete: ' + err.message);
  }
  refresh();
}

// ---- uploads ----

/** One line in the upload list: name, progress bar, state. */
function uploadRow(name) {
  const li = document.createElement('li');
  const label = document.createElement('span');
  label.textContent = name;
  const bar = document.createElement('progress');
  bar.max = 1;
  bar.value = 0;
  const note = document.createElement('span');
  note.className = 'note';
  li.append(label, bar, note);
  $('uploads').append(li);
  return {
    progress(fraction, text) { bar.value = fraction; note.textContent = text; },
    done(text) { bar.value = 1; note.textContent = text; li.dataset.state = 'done'; },
    failed(text) { note.textContent = text; li.dataset.state = 'failed'; },
  };
}

async function ensureDir(parent, name) {
  try {
    return (await api('POST', `/nodes/${parent}/children`, { name, kind: 'dir', mode: 0o755 })).ino;
  } catch (err) {
    if (err.code !== 'exists') throw err;
    const node = await api('GET', `/nodes/${parent}/children/${encodeURIComponent(name)}`);
    if (node.kind !== 'dir') throw new ApiError(409, 'not_dir', name + ' is not a folder');
    return node.ino;
  }
}

async function ensureFile(parent, name) {
  try {
    return await api('POST', `/nodes/${parent}/children`, { name, kind: 'file', mode: 0o644 });
  } catch (err) {
    if (err.code !== 'exists') throw err;
    const node = await api('GET', `/nodes/${parent}/children/${encodeURIComponent(name)}`);
    if (node.kind !== 'file') throw new ApiError(409, 'is_dir', name + ' is a folder');
    return node;
  }
}

function hashInWorker(file, onProgress) {
  return new Promise((resolve, reject) => {
    const worker = new Worker('/hash-worker.js');
    worker.onmessage = (e) => {
      if (e.data.progress !== undefined) onProgress(e.data.progress);
      if (e.data.error) { worker.terminate(); reject(new Error(e.data.error)); }
      if (e.data.done) { worker.terminate(); resolve(e.data); }
    };
    worker.onerror = (e) => { worker.terminate(); reject(new Error(e.message)); };
    worker.postMessage({ file });
  });
}

/** Answers a proof-of-possession challenge from the file's own bytes. */
async function prove(session, file) {
  const hasher = new Sha256();
  hasher.update(new TextEncoder().encode(session.challenge.nonce));
  for (const [start, len] of session.challenge.ranges) {
    hasher.update(new Uint8Array(await file.slice(start, start + len).arrayBuffer()));
  }
  return api('POST', `/uploads/${session.id}/proof`, { proof: hasher.hex() });
}

async function sendChunk(sessionId, sha, blob, onProgress) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await putBlob(`/uploads/${sessionId}/chunks/${sha}`, blob, onProgress);
    } catch (err) {
      const retryable = err.status === 0 || err.status >= 500;
      if (!retryable || attempt >= CHUNK_RETRIES) throw err;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
  }
}

/** An upload session for these chunks: the saved one when it is still alive (resume). */
async function openSession(ino, hashes, resumeKey) {
  const saved = localStorage.getItem(resumeKey);
  if (saved) {
    try { return await api('GET', `/uploads/${saved}`); } catch { localStorage.removeItem(resumeKey); }
  }
  const session = await api('POST', '/uploads', { ino, chunks: hashes.chunks });
  localStorage.setItem(resumeKey, session.id);
  return session;
}

async function uploadLarge(node, file, row) {
  const hashes = await hashInWorker(file, (f) => row.progress(0, 'hashing ' + Math.round(f * 100) + '%'));
  const mtime = file.lastModified * 1e6;
  // Instant upload: the server knows the content by its whole-file hashes.
  let session = null;
  try {
    session = await api('POST', '/uploads', { ino: node.ino, chunks: [], sha256: hashes.sha256, sha1: hashes.sha1 });
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  const instant = session !== null;
  const resumeKey = `pan-upload:${node.ino}:${file.size}:${file.lastModified}:${hashes.sha256}`;
  if (!instant) session = await openSession(node.ino, hashes, resumeKey);
  if (session.challenge) session = await prove(session, file);

  const offsets = new Map();
  let at = 0;
  for (const c of hashes.chunks) { if (!offsets.has(c.sha256)) offsets.set(c.sha256, [at, c.size]); at += c.size; }
  const missing = session.missing.filter((sha) => offsets.has(sha));
  const total = missing.reduce((n, sha) => n + offsets.get(sha)[1], 0);
  const sent = new Map();
  const report = () => {
    const bytes = [...sent.values()].reduce((a, b) => a + b, 0);
    row.progress(total ? bytes / total : 1, humanSize(bytes) + ' of ' + humanSize(total));
  };
  const queue = [...missing];
  const workers = Array.from({ length: PARALLEL_CHUNKS }, async () => {
    while (queue.length > 0) {
      const sha = queue.shift();
      const [start, size] = offsets.get(sha);
      await sendChunk(session.id, sha, file.slice(start, start + size), (n) => { sent.set(sha, n); report(); });
      sent.set(sha, size);
      report();
    }
  });
  await Promise.all(workers);
  await api('POST', `/uploads/${session.id}/commit`, { mtime });
  localStorage.removeItem(resumeKey);
  return instant ? 'done (instant)' : 'done';
}

async function uploadFile(parent, name, file) {
  const row = uploadRow(name);
  try {
    const node = await ensureFile(parent, name);
    let result = 'done';
    if (file.size <= SMALL_FILE) {
      const mtime = file.lastModified * 1e6;
      await putBlob(`/nodes/${node.ino}/content?mtime=${mtime}`, file, (n) => row.progress(file.size ? n / file.size : 1, humanSize(n)));
    } else {
      result = await uploadLarge(node, file, row);
    }
    row.done(result);
  } catch (err) {
    row.failed('failed: ' + err.message);
    setStatus('Upload of ' + name + ' failed: ' + err.message);
  }
}

/** Uploads [{file, path: [dir, ..., name]}] into the current folder, creating folders. */
async function uploadAll(items) {
  const base = currentIno();
  const dirs = new Map();
  for (const { file, path } of items) {
    let parent = base;
    try {
      for (let i = 0; i < path.length - 1; i++) {
        const key = path.slice(0, i + 1).join('/');
        if (!dirs.has(key)) dirs.set(key, await ensureDir(parent, path[i]));
        parent = dirs.get(key);
      }
    } catch (err) {
      setStatus('Could not create a folder: ' + err.message);
      continue;
    }
    await uploadFile(parent, path[path.length - 1], file);
  }
  refresh();
}

function picked(input) {
  const items = Array.from(input.files, (file) => ({
    file,
    path: (file.webkitRelativePath || file.name).split('/').filter((s) => s !== ''),
  }));
  input.value = '';
  uploadAll(items);
}

/** Files under a dropped entry, with their paths (folders are read recursively). */
async function walkEntry(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, path: [...prefix, entry.name] });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (batch.length === 0) break;
      for (const child of batch) await walkEntry(child, [...prefix, entry.name], out);
    }
  }
}

async function dropped(event) {
  event.preventDefault();
  $('drop').classList.remove('over');
  const entries = Array.from(event.dataTransfer.items, (item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  const items = [];
  if (entries.length > 0) {
    for (const entry of entries) await walkEntry(entry, [], items);
  } else {
    for (const file of event.dataTransfer.files) items.push({ file, path: [file.name] });
  }
  uploadAll(items);
}

// ---- wiring ----

function wireEvents() {
  $('auth-form').addEventListener('submit', (e) => { e.preventDefault(); signIn(); });
  $('signup').addEventListener('click', signUp);
  $('signout').addEventListener('click', signOut);
  $('mkdir').addEventListener('click', makeDir);
  $('pick-files').addEventListener('change', (e) => picked(e.target));
  $('pick-folder').addEventListener('change', (e) => picked(e.target));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', dropped);
  for (const b of document.querySelectorAll('button.sort')) {
    b.addEventListener('click', () => {
      const key = b.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      render();
    });
  }
}

document.addEventListener('DOMContentLoaded', start);
