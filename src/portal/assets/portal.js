// jetpost's tenant portal: destinations and activity for the tenant named by the portal link's
// token. Plain JavaScript, no build step: the page is built with DOM calls (never innerHTML from
// data), and every read and write goes through /api/v1 with the token as a bearer token.

const STORAGE_KEY = 'jetpost-portal';
const PAGE_SIZE = 20;

const session = { token: null, tenantId: null, expiresAt: null };
const cache = { types: null, topics: null };
// A secret the API just returned (create or rotate), shown once on the destination's page.
let freshSecret = null;
// Bumped on every navigation: a slow view that finishes after the user moved on is dropped.
let generation = 0;

// ---------------------------------------------------------------------------------------------
// DOM helpers

function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

function svg(tag, attrs, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.setAttribute('class', value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

function field(labelText, control, hint, required) {
  const id = control.id || (control.id = nextId('f'));
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  if (required) control.required = true;
  return h('div', { class: 'field' },
    h('label', { for: id }, labelText, required ? h('span', { class: 'req' }, ' (required)') : null),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

function formatTime(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

// A notice survives the navigation that follows it (an action's outcome is shown on the page it
// leads to) and goes with the one after.
let noticeKeepUntil = 0;

function showNotice(text, kind = 'info') {
  noticeKeepUntil = generation + 1;
  const notice = document.getElementById('notice');
  notice.className = `notice ${kind}`;
  notice.textContent = text;
  notice.hidden = false;
}

function clearNotice() {
  document.getElementById('notice').hidden = true;
}

function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close('cancel') }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: () => dialog.close('confirm') }, confirmLabel)));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'confirm');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// ---------------------------------------------------------------------------------------------
// The token and the API

class ApiError extends Error {
  constructor(status, body) {
    const details = Array.isArray(body && body.data) ? body.data
      : body && body.data && typeof body.data === 'object' ? Object.values(body.data).map(String) : [];
    super((body && body.message) || `the server answered ${status}`);
    this.status = status;
    this.details = details;
  }
}

// The portal link carries the token in its fragment (`#token=…&tenant_id=…`), which browsers
// never send to a server; a link in Outpost's shape (`?token=…`) works too. Either is moved to
// this tab's session storage and wiped from the address bar and history at once.
function readToken() {
  const fromUrl = new URLSearchParams(location.hash.startsWith('#token=') ? location.hash.slice(1) : location.search);
  if (fromUrl.get('token')) {
    const saved = { token: fromUrl.get('token'), theme: fromUrl.get('theme') };
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
    history.replaceState(null, '', `${location.pathname}#/destinations`);
  }
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
  } catch {
    saved = null;
  }
  if (!saved || !saved.token) return false;
  const claims = decodeClaims(saved.token);
  if (!claims || typeof claims.sub !== 'string') return false;
  session.token = saved.token;
  session.tenantId = claims.sub;
  session.expiresAt = typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : null;
  if (saved.theme === 'dark' || saved.theme === 'light') document.documentElement.dataset.theme = saved.theme;
  return true;
}

function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch {
    return null;
  }
}

const expired = () => session.expiresAt !== null && Date.now() >= session.expiresAt.getTime();

async function api(method, path, body) {
  if (expired()) throw showExpired();
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${session.token}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  // The token ran out, or the tenant it names was deleted: either way this link is over.
  if (response.status === 401) throw showExpired();
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

const enc = encodeURIComponent;
const tenantPath = (rest = '') => `/tenants/${enc(session.tenantId)}${rest}`;
const destinationPath = (id, rest = '') => tenantPath(`/destinations/${enc(id)}${rest}`);

async function destinationTypes() {
  if (!cache.types) cache.types = await api('GET', '/destination-types');
  return cache.types;
}

async function configuredTopics() {
  if (!cache.topics) cache.topics = await api('GET', '/topics');
  return cache.topics;
}

// ---------------------------------------------------------------------------------------------
// Pages without a session

function showExpired() {
  sessionStorage.removeItem(STORAGE_KEY);
  generation++;
  const when = session.expiresAt ? ` (it was valid until ${session.expiresAt.toLocaleString()})` : '';
  showPage('This portal link has expired',
    `For your security, portal links work for a limited time${when}. Open the portal again from where you found the link to get a fresh one.`);
  return new Error('the portal link has expired');
}

function showNoLink() {
  showPage('Open the portal from its link',
    'This page shows your event destinations when it is opened through a portal link. Open it again from where you found the link.');
}

function showPage(title, text) {
  document.getElementById('nav').hidden = true;
  document.getElementById('who').replaceChildren();
  clearNotice();
  document.title = `${title} · Event destinations`;
  const heading = h('h1', { tabindex: '-1' }, title);
  document.getElementById('main').replaceChildren(h('section', { class: 'gone' }, heading, h('p', {}, text)));
  heading.focus();
}

// ---------------------------------------------------------------------------------------------
// Routing

const ROUTES = [
  [/^#\/destinations\/new$/, () => viewTypePicker()],
  [/^#\/destinations\/new\/([^/?]+)$/, (m) => viewDestinationForm(decodeURIComponent(m[1]), null)],
  [/^#\/destinations\/([^/?]+)\/edit$/, (m) => viewEdit(decodeURIComponent(m[1]))],
  [/^#\/destinations\/([^/?]+)$/, (m) => viewDestination(decodeURIComponent(m[1]))],
  [/^#\/activity(?:\?(.*))?$/, (m) => viewActivity(new URLSearchParams(m[1] || ''))],
  [/^#\/events(?:\?(.*))?$/, (m) => viewEvents(new URLSearchParams(m[1] || ''))],
  [/^#\/destinations$/, () => viewDestinations()],
];

async function route() {
  if (expired()) return void showExpired();
  const hash = location.hash || '#/destinations';
  const found = ROUTES.map(([pattern, view]) => [hash.match(pattern), view]).find(([m]) => m);
  if (!found) {
    location.replace('#/destinations');
    return;
  }
  const [match, view] = found;
  const mine = ++generation;
  if (mine > noticeKeepUntil) clearNotice();
  const section = hash.split(/[/?]/)[1];
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  let page;
  try {
    page = await view(match);
  } catch (err) {
    if (expired() || mine !== generation) return;
    page = h('section', {}, h('h1', { tabindex: '-1' }, 'Something went wrong'),
      h('p', { class: 'error' }, err.message || String(err)),
      h('p', {}, h('a', { href: '#/destinations' }, 'Back to destinations')));
  }
  if (mine !== generation) return;
  const main = document.getElementById('main');
  main.replaceChildren(page);
  const heading = main.querySelector('h1');
  document.title = `${heading ? heading.textContent : 'Portal'} · Event destinations`;
  // After a navigation, focus moves to the new page's heading (screen readers announce it); the
  // first page keeps the browser's start, so Tab reaches the skip link first.
  if (heading && !firstPage && !document.activeElement?.closest?.('#main')) heading.focus({ preventScroll: true });
  firstPage = false;
}

let firstPage = true;

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---------------------------------------------------------------------------------------------
// Destinations

function typeOf(types, type) {
  return types.find((t) => t.type === type) || { type, label: type, config_fields: [], credential_fields: [] };
}

function typeIcon(meta) {
  if (!meta.icon) return null;
  // As an image, an icon can draw but never run anything.
  return h('img', { class: 'icon', alt: '', width: 20, height: 20, src: `data:image/svg+xml;charset=utf-8,${enc(meta.icon)}` });
}

const topicsText = (topics) => (topics === '*' || (Array.isArray(topics) && topics.includes('*')) ? 'All topics' : [].concat(topics).join(', '));

function statusOf(destination, lastAttempt) {
  if (destination.disabled_at) return ['Disabled', 'disabled'];
  if (lastAttempt && lastAttempt.status === 'failed') return ['Failing', 'failed'];
  return ['Active', 'success'];
}

const badge = ([text, kind]) => h('span', { class: `badge ${kind}` }, text);

async function viewDestinations() {
  const [destinations, types] = await Promise.all([api('GET', tenantPath('/destinations')), destinationTypes()]);
  const latest = await Promise.all(destinations.map((d) =>
    api('GET', destinationPath(d.id, '/attempts?limit=1')).then((page) => (page.models || [])[0], () => null)));
  const rows = destinations.map((d, i) => {
    const meta = typeOf(types, d.type);
    return h('tr', {},
      h('td', { 'data-label': 'Type' }, h('span', { class: 'type' }, typeIcon(meta), meta.label)),
      h('td', { 'data-label': 'Target' }, h('a', { href: `#/destinations/${enc(d.id)}` }, d.target || d.id)),
      h('td', { 'data-label': 'Topics' }, topicsText(d.topics)),
      h('td', { 'data-label': 'Status' }, badge(statusOf(d, latest[i]))));
  });
  return h('section', {},
    h('div', { class: 'title-row' },
      h('h1', { tabindex: '-1' }, 'Destinations'),
      h('a', { class: 'button', href: '#/destinations/new' }, 'Add destination')),
    destinations.length === 0
      ? h('p', { class: 'empty' }, 'No destinations yet. Add one to start receiving events.')
      : h('table', { class: 'list' },
        h('caption', { class: 'sr-only' }, 'Your destinations'),
        h('thead', {}, h('tr', {}, ['Type', 'Target', 'Topics', 'Status'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows)));
}

async function viewTypePicker() {
  const types = await destinationTypes();
  return h('section', {},
    h('h1', { tabindex: '-1' }, 'Add a destination'),
    h('p', {}, 'Where should events go?'),
    h('ul', { class: 'types' }, types.map((t) => h('li', {},
      h('a', { class: 'type-card', href: `#/destinations/new/${enc(t.type)}` },
        h('span', { class: 'type' }, typeIcon(t), h('strong', {}, t.label)),
        h('span', { class: 'muted' }, t.description || ''))))),
    h('p', {}, h('a', { href: '#/destinations' }, 'Cancel')));
}

async function viewEdit(id) {
  const destination = await api('GET', destinationPath(id));
  return viewDestinationForm(destination.type, destination);
}

// Markdown-ish instructions as plain paragraphs: headings become bold lines, nothing is parsed
// as HTML.
function instructionsOf(meta) {
  if (!meta.instructions) return null;
  const paragraphs = meta.instructions.split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  return h('details', { class: 'instructions' }, h('summary', {}, `How to set up ${meta.label}`),
    paragraphs.map((p) => (p.startsWith('#') ? h('p', {}, h('strong', {}, p.replace(/^#+\s*/, ''))) : h('p', {}, p.replace(/\*\*/g, '')))));
}

function configControl(spec, current, editing) {
  const id = nextId(`field-${spec.key}`);
  if (spec.type === 'checkbox') {
    const value = current !== undefined ? current : spec.default;
    // Outpost's checkbox values are "true"/"false", and "on" in some types' defaults.
    const box = h('input', { type: 'checkbox', id, name: spec.key, checked: value === 'true' || value === 'on' || value === true });
    return {
      node: h('div', { class: 'field check' }, box,
        h('label', { for: id }, spec.label), spec.description ? h('p', { class: 'hint' }, spec.description) : null),
      read: () => (box.checked ? 'true' : 'false'),
    };
  }
  if (spec.type === 'select') {
    const select = h('select', { id, name: spec.key },
      spec.required ? null : h('option', { value: '' }, '—'),
      (spec.options || []).map((o) => h('option', { value: o.value, selected: (current ?? spec.default) === o.value }, o.label)));
    return { node: field(spec.label, select, spec.description, spec.required), read: () => select.value || undefined };
  }
  if (spec.type === 'key_value_map') return keyValueControl(spec, current);
  const sensitive = spec.sensitive === true;
  const input = h(spec.key === 'creds' ? 'textarea' : 'input', {
    id,
    name: spec.key,
    type: spec.key === 'creds' ? null : sensitive ? 'password' : 'text',
    autocomplete: 'off',
    spellcheck: 'false',
    pattern: spec.pattern || null,
    placeholder: sensitive && editing ? 'unchanged — type to replace' : null,
  });
  if (!sensitive && current != null) input.value = current;
  else if (!editing && spec.default != null) input.value = spec.default;
  // A stored secret is never put back in the form: blank keeps it.
  const required = spec.required && !(sensitive && editing);
  return { node: field(spec.label, input, spec.description, required), read: () => input.value.trim() || undefined };
}

// Rows of name and value: `custom_headers` (read as a JSON object's text, as the API stores
// it), or a metadata map (read as an object, `asText` false).
function keyValueControl(spec, current, asText = true) {
  let entries = [];
  try {
    const parsed = typeof current === 'string' ? JSON.parse(current) : current;
    if (parsed && typeof parsed === 'object') entries = Object.entries(parsed);
  } catch {
    entries = [];
  }
  const rows = h('div', { class: 'kv-rows' });
  const addRow = (name = '', value = '') => {
    const n = rows.children.length + 1;
    const nameInput = h('input', { type: 'text', class: 'kv-name', 'aria-label': `${spec.label}: name ${n}`, placeholder: 'Name', value: name, autocomplete: 'off' });
    const valueInput = h('input', { type: 'text', class: 'kv-value', 'aria-label': `${spec.label}: value ${n}`, placeholder: 'Value', value, autocomplete: 'off' });
    const row = h('div', { class: 'kv-row' }, nameInput, valueInput,
      h('button', { type: 'button', class: 'secondary small', 'aria-label': `Remove ${spec.label.toLowerCase()} ${n}`, onclick: () => row.remove() }, 'Remove'));
    rows.append(row);
    return nameInput;
  };
  entries.forEach(([k, v]) => addRow(k, String(v)));
  const hintId = nextId('hint');
  return {
    node: h('fieldset', { class: 'field kv', 'aria-describedby': spec.description ? hintId : null },
      h('legend', {}, spec.label),
      spec.description ? h('p', { class: 'hint', id: hintId }, spec.description) : null,
      rows,
      h('button', { type: 'button', class: 'secondary small', onclick: () => addRow().focus() }, `Add ${spec.key === 'custom_headers' ? 'header' : 'entry'}`)),
    read: () => {
      const map = {};
      for (const row of rows.children) {
        const name = row.querySelector('.kv-name').value.trim();
        if (name) map[name] = row.querySelector('.kv-value').value;
      }
      if (!Object.keys(map).length) return undefined;
      return asText ? JSON.stringify(map) : map;
    },
  };
}

// A metadata map for the request body. Editing, a key the form no longer has is sent as null:
// the API merges maps key by key.
function mapForBody(control, before, editing) {
  const now = control.read() || {};
  const out = { ...now };
  if (editing) for (const key of Object.keys(before || {})) if (!(key in now)) out[key] = null;
  return Object.keys(out).length ? out : undefined;
}

async function topicsControl(current) {
  const configured = await configuredTopics();
  const all = current === undefined || current === '*' || (Array.isArray(current) && current.includes('*'));
  const chosen = new Set(all ? [] : [].concat(current));
  const allBox = h('input', { type: 'checkbox', id: nextId('topics-all'), checked: all });
  let pick;
  let read;
  if (configured.length) {
    const boxes = configured.map((topic) => h('input', { type: 'checkbox', value: topic, id: nextId('topic'), checked: chosen.has(topic) }));
    pick = h('div', { class: 'topic-list' }, boxes.map((box) => h('label', { class: 'check', for: box.id }, box, ` ${box.value}`)));
    read = () => boxes.filter((b) => b.checked).map((b) => b.value);
  } else {
    const input = h('input', { type: 'text', id: nextId('topics'), value: [...chosen].join(', '), autocomplete: 'off' });
    pick = field('Topics, comma-separated', input, 'For example: order.created, order.paid');
    read = () => input.value.split(',').map((t) => t.trim()).filter(Boolean);
  }
  const sync = () => { pick.hidden = allBox.checked; };
  allBox.addEventListener('change', sync);
  sync();
  return {
    node: h('fieldset', { class: 'field' }, h('legend', {}, 'Topics'),
      h('div', { class: 'check' }, allBox, h('label', { for: allBox.id }, ' All topics')), pick),
    read: () => (allBox.checked ? '*' : read()),
  };
}

function filterControl(current, sampleTopic) {
  const text = h('textarea', { id: nextId('filter'), rows: 5, spellcheck: 'false', class: 'code' });
  text.value = current && Object.keys(current).length ? JSON.stringify(current, null, 2) : '';
  const sample = h('textarea', { id: nextId('sample'), rows: 5, spellcheck: 'false', class: 'code' });
  sample.value = JSON.stringify({ topic: sampleTopic, metadata: {}, data: { amount: 120 } }, null, 2);
  const result = h('p', { class: 'result', role: 'status' });
  const parse = (area, what) => {
    const value = area.value.trim();
    if (!value) return {};
    try {
      return JSON.parse(value);
    } catch (err) {
      throw new Error(`${what} is not valid JSON: ${err.message}`);
    }
  };
  const test = async () => {
    result.className = 'result';
    result.textContent = 'Testing…';
    try {
      const answer = await api('POST', '/filters/match', { filter: parse(text, 'The filter'), event: parse(sample, 'The event') });
      result.className = `result ${answer.matches ? 'ok' : 'no'}`;
      result.textContent = answer.matches ? 'Matches: this event would be delivered.' : 'No match: this event would not be delivered.';
    } catch (err) {
      result.className = 'result error';
      result.textContent = [err.message, ...(err.details || [])].join(' — ');
    }
  };
  return {
    node: h('fieldset', { class: 'field' }, h('legend', {}, 'Filter'),
      field('Filter (JSON)', text, 'Deliver only the events that match, e.g. {"data": {"amount": {"$gte": 100}}}. Leave empty to deliver every event of the chosen topics.'),
      h('details', { class: 'tester' }, h('summary', {}, 'Test this filter against an event'),
        field('Event (JSON)', sample, 'An event as published: topic, metadata and data.'),
        h('button', { type: 'button', class: 'secondary', onclick: test }, 'Test filter'), result)),
    read: () => {
      const value = parse(text, 'The filter');
      if (typeof value !== 'object' || Array.isArray(value) || value === null) throw new Error('The filter must be a JSON object.');
      return value;
    },
  };
}

async function viewDestinationForm(type, existing) {
  const types = await destinationTypes();
  const meta = types.find((t) => t.type === type);
  if (!meta) throw new Error(`This server does not deliver to destinations of type "${type}".`);
  const editing = existing !== null;
  const topics = await topicsControl(editing ? existing.topics : undefined);
  const configured = await configuredTopics();
  const config = (meta.config_fields || []).map((spec) => [spec.key, configControl(spec, editing ? (existing.config || {})[spec.key] : undefined, editing)]);
  const credentials = (meta.credential_fields || []).map((spec) => [spec.key, configControl(spec, editing ? (existing.credentials || {})[spec.key] : undefined, editing)]);
  const filter = filterControl(editing ? existing.filter : null, configured[0] || 'order.created');
  const deliveryMetadata = keyValueControl({ key: 'delivery_metadata', label: 'Delivery metadata',
    description: 'Sent with every event to this destination (as headers for webhooks).' }, editing ? existing.delivery_metadata : null, false);
  const metadata = keyValueControl({ key: 'metadata', label: 'Metadata',
    description: 'Your own notes on this destination; never sent.' }, editing ? existing.metadata : null, false);
  const errors = h('div', { class: 'form-errors', role: 'alert', tabindex: '-1', hidden: true });
  const submit = h('button', { type: 'submit' }, editing ? 'Save changes' : 'Create destination');

  const collect = (controls, clearMissing) => {
    const out = {};
    for (const [key, control] of controls) {
      const value = control.read();
      if (value !== undefined) out[key] = value;
      else if (clearMissing) out[key] = null;
    }
    return out;
  };

  const onsubmit = async (e) => {
    e.preventDefault();
    errors.hidden = true;
    let body;
    try {
      body = { type, topics: topics.read(), config: collect(config, editing), filter: filter.read() };
      const creds = collect(credentials.filter(([, c]) => c), false);
      if (Object.keys(creds).length) body.credentials = creds;
      const sent = mapForBody(deliveryMetadata, editing && existing.delivery_metadata, editing);
      if (sent) body.delivery_metadata = sent;
      const notes = mapForBody(metadata, editing && existing.metadata, editing);
      if (notes) body.metadata = notes;
      if (Array.isArray(body.topics) && body.topics.length === 0) throw new Error('Choose at least one topic, or All topics.');
    } catch (err) {
      showErrors(errors, err);
      return;
    }
    if (editing) {
      // Sensitive fields left blank keep the stored value: never send them as cleared.
      for (const spec of meta.config_fields || []) if (spec.sensitive && body.config[spec.key] === null) delete body.config[spec.key];
      if (Object.keys(body.filter).length === 0) body.filter = null;
    }
    submit.disabled = true;
    try {
      const saved = editing
        ? await api('PATCH', destinationPath(existing.id), body)
        : await api('POST', tenantPath('/destinations'), body);
      if (!editing && saved.credentials && saved.credentials.secret) freshSecret = { id: saved.id, secret: saved.credentials.secret };
      showNotice(editing ? 'Changes saved.' : 'Destination created.', 'success');
      go(`#/destinations/${enc(saved.id)}`);
    } catch (err) {
      showErrors(errors, err);
    } finally {
      submit.disabled = false;
    }
  };

  return h('section', {},
    h('h1', { tabindex: '-1' }, editing ? `Edit ${meta.label} destination` : `New ${meta.label} destination`),
    instructionsOf(meta),
    h('form', { class: 'destination-form', novalidate: true, onsubmit },
      errors,
      topics.node,
      config.length ? h('fieldset', { class: 'group' }, h('legend', {}, 'Settings'), config.map(([, c]) => c.node)) : null,
      credentials.length ? h('fieldset', { class: 'group' }, h('legend', {}, 'Credentials'), credentials.map(([, c]) => c.node)) : null,
      filter.node,
      h('details', { class: 'more', open: editing && (Object.keys(existing.delivery_metadata || {}).length || Object.keys(existing.metadata || {}).length) ? true : null },
        h('summary', {}, 'More options: metadata'), deliveryMetadata.node, metadata.node),
      h('div', { class: 'actions' }, submit,
        h('a', { href: editing ? `#/destinations/${enc(existing.id)}` : '#/destinations', class: 'button secondary' }, 'Cancel'))));
}

function showErrors(box, err) {
  box.replaceChildren(h('p', {}, h('strong', {}, err.message || String(err))),
    err.details && err.details.length ? h('ul', {}, err.details.map((d) => h('li', {}, d))) : null);
  box.hidden = false;
  box.focus();
}

async function viewDestination(id) {
  const [destination, types] = await Promise.all([api('GET', destinationPath(id)), destinationTypes()]);
  const meta = typeOf(types, destination.type);
  const recent = await api('GET', destinationPath(id, '/attempts?limit=10&include=event.data&include=response_data'));
  const attempts = recent.models || [];
  const enabled = !destination.disabled_at;

  const toggle = async () => {
    await act(() => api('PUT', destinationPath(id, enabled ? '/disable' : '/enable')), enabled ? 'Destination disabled.' : 'Destination enabled.');
    go(`#/destinations/${enc(id)}`);
  };
  const remove = async () => {
    const sure = await confirmDialog('Delete this destination?',
      `${destination.target || destination.id} will stop receiving events, and deliveries waiting for it are cancelled. This cannot be undone.`, 'Delete destination');
    if (!sure) return;
    if (await act(() => api('DELETE', destinationPath(id)), 'Destination deleted.')) go('#/destinations');
  };

  const config = Object.entries(destination.config || {});
  return h('section', {},
    h('p', { class: 'crumbs' }, h('a', { href: '#/destinations' }, '← Destinations')),
    h('div', { class: 'title-row' },
      h('h1', { tabindex: '-1' }, h('span', { class: 'type' }, typeIcon(meta), destination.target || destination.id)),
      badge(statusOf(destination, attempts[0]))),
    h('div', { class: 'actions' },
      h('a', { class: 'button', href: `#/destinations/${enc(id)}/edit` }, 'Edit'),
      h('button', { type: 'button', class: 'secondary', onclick: toggle }, enabled ? 'Disable' : 'Enable'),
      h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete')),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Type'), h('dd', {}, meta.label),
      h('dt', {}, 'Topics'), h('dd', {}, topicsText(destination.topics)),
      h('dt', {}, 'Filter'), h('dd', {}, destination.filter && Object.keys(destination.filter).length
        ? h('pre', { class: 'code' }, JSON.stringify(destination.filter, null, 2)) : 'None: every event of these topics'),
      config.map(([key, value]) => {
        const spec = (meta.config_fields || []).find((f) => f.key === key);
        return [h('dt', {}, spec ? spec.label : key), h('dd', {}, configValue(spec, value))];
      }),
      [['Delivery metadata', destination.delivery_metadata], ['Metadata', destination.metadata]]
        .filter(([, map]) => map && Object.keys(map).length)
        .map(([label, map]) => [h('dt', {}, label), h('dd', {}, configValue({ type: 'key_value_map' }, map))]),
      h('dt', {}, 'Created'), h('dd', {}, formatTime(destination.created_at))),
    secretSection(destination),
    await chartSection(id),
    h('h2', {}, 'Latest attempts'),
    attemptsTable(attempts, types, [destination], { showDestination: false }),
    h('p', {}, h('a', { href: `#/activity?destination_id=${enc(id)}` }, 'All activity for this destination')));
}

function configValue(spec, value) {
  if (spec && spec.sensitive) return '••••••••';
  if (spec && spec.type === 'key_value_map') {
    try {
      const map = typeof value === 'string' ? JSON.parse(value) : value;
      return h('ul', { class: 'plain' }, Object.entries(map).map(([k, v]) => h('li', {}, h('code', {}, k), `: ${v}`)));
    } catch {
      return String(value);
    }
  }
  return String(value);
}

// Runs an action, reporting its outcome in the notice; true when it worked.
async function act(action, success) {
  try {
    await action();
    showNotice(success, 'success');
    return true;
  } catch (err) {
    showNotice([err.message, ...(err.details || [])].join(' — '), 'error');
    return false;
  }
}

// A webhook's signing secret is shown once, right after it was made; afterwards only its
// beginning, and a new one can be made (the old keeps signing for a day).
function secretSection(destination) {
  const secret = destination.credentials && destination.credentials.secret;
  if (!secret) return null;
  const section = h('section', { class: 'secret', 'aria-labelledby': 'secret-title' });
  const render = () => {
    const fresh = freshSecret && freshSecret.id === destination.id ? freshSecret.secret : null;
    freshSecret = null;
    const rotate = async () => {
      const sure = await confirmDialog('Rotate the signing secret?',
        'A new secret signs every request from now on. The current one keeps signing too for 24 hours, so you can switch your endpoint over.', 'Rotate secret');
      if (!sure) return;
      try {
        const saved = await api('PATCH', destinationPath(destination.id), { type: destination.type, credentials: { rotate_secret: true } });
        freshSecret = { id: destination.id, secret: saved.credentials.secret };
        showNotice('Secret rotated. Copy the new one now.', 'success');
        render();
      } catch (err) {
        showNotice(err.message, 'error');
      }
    };
    const value = fresh
      ? [h('p', {}, 'Copy this secret now: it is shown only once.'),
        h('div', { class: 'secret-value' }, h('code', { id: 'secret-value' }, fresh),
          h('button', { type: 'button', class: 'secondary small', onclick: () => navigator.clipboard.writeText(fresh).then(() => showNotice('Secret copied.', 'success'), () => showNotice('Copying failed: select the secret and copy it.', 'error')) }, 'Copy'))]
      : [h('p', {}, h('code', {}, `${secret.slice(0, 10)}…`), ' — shown only when it is made. Rotate to get a new one.')];
    section.replaceChildren(h('h2', { id: 'secret-title' }, 'Signing secret'), ...value,
      h('button', { type: 'button', class: 'secondary', onclick: rotate }, 'Rotate secret'));
  };
  render();
  return section;
}

// ---------------------------------------------------------------------------------------------
// The per-destination chart, from /metrics/attempts

const RANGES = {
  '1h': { label: 'Last hour', ms: 3600e3, granularity: '5m', step: 300e3 },
  '24h': { label: 'Last 24 hours', ms: 86400e3, granularity: '1h', step: 3600e3 },
  '7d': { label: 'Last 7 days', ms: 7 * 86400e3, granularity: '12h', step: 12 * 3600e3 },
};

async function chartSection(destinationId) {
  const box = h('div', { class: 'chart-box' });
  const select = h('select', { id: nextId('range') }, Object.entries(RANGES).map(([key, r]) => h('option', { value: key, selected: key === '24h' }, r.label)));
  const draw = async () => {
    try {
      box.replaceChildren(await chart(destinationId, RANGES[select.value]));
    } catch (err) {
      box.replaceChildren(h('p', { class: 'error' }, err.message));
    }
  };
  select.addEventListener('change', draw);
  await draw();
  return h('section', { class: 'chart' }, h('div', { class: 'title-row' }, h('h2', {}, 'Deliveries'), field('Period', select)), box);
}

async function chart(destinationId, range) {
  const end = Math.ceil(Date.now() / range.step) * range.step;
  const start = end - range.ms;
  const query = new URLSearchParams({
    'time[start]': new Date(start).toISOString(),
    'time[end]': new Date(end).toISOString(),
    granularity: range.granularity,
  });
  query.append('measures[]', 'successful_count');
  query.append('measures[]', 'failed_count');
  query.append('filters[destination_id][]', destinationId);
  const answer = await api('GET', `/metrics/attempts?${query}`);
  const buckets = new Map();
  for (let t = start; t < end; t += range.step) buckets.set(t, { ok: 0, failed: 0 });
  for (const row of answer.data || []) {
    const slot = buckets.get(new Date(row.time_bucket).getTime());
    if (!slot) continue;
    slot.ok += row.metrics.successful_count || 0;
    slot.failed += row.metrics.failed_count || 0;
  }
  const series = [...buckets.entries()];
  const total = series.reduce((sum, [, b]) => ({ ok: sum.ok + b.ok, failed: sum.failed + b.failed }), { ok: 0, failed: 0 });
  const max = Math.max(1, ...series.map(([, b]) => b.ok + b.failed));
  const width = 600;
  const height = 140;
  const barWidth = width / series.length;
  const summary = `${total.ok} succeeded, ${total.failed} failed (${range.label.toLowerCase()})`;
  const bars = series.map(([t, b], i) => {
    const x = i * barWidth + 1;
    const okHeight = (b.ok / max) * (height - 20);
    const failedHeight = (b.failed / max) * (height - 20);
    return svg('g', {},
      svg('title', {}, `${new Date(t).toLocaleString()}: ${b.ok} succeeded, ${b.failed} failed`),
      svg('rect', { class: 'bar-ok', x, width: Math.max(1, barWidth - 2), y: height - okHeight, height: okHeight }),
      svg('rect', { class: 'bar-failed', x, width: Math.max(1, barWidth - 2), y: height - okHeight - failedHeight, height: failedHeight }));
  });
  return h('figure', {},
    svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summary, preserveAspectRatio: 'none', class: 'bars' },
      svg('line', { class: 'axis', x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5 }), bars),
    h('figcaption', { class: 'legend' },
      h('span', { class: 'key ok' }, `${total.ok} succeeded`), ' ',
      h('span', { class: 'key failed' }, `${total.failed} failed`), ` · ${range.label.toLowerCase()}`));
}

// ---------------------------------------------------------------------------------------------
// Activity: attempts and events

function attemptsTable(attempts, types, destinations, { showDestination }) {
  if (!attempts.length) return h('p', { class: 'empty' }, 'No delivery attempts yet.');
  const destinationName = (id) => {
    const d = destinations.find((x) => x.id === id);
    return d ? d.target || d.id : id;
  };
  const body = attempts.map((a) => {
    const event = a.event || {};
    const retry = async (button) => {
      button.disabled = true;
      const queued = await act(() => api('POST', '/retry', { event_id: a.event_id || event.id, destination_id: a.destination_id }), 'Retry queued: the event is being delivered again.');
      if (!queued) button.disabled = false;
    };
    const response = a.response_data;
    return h('tbody', { class: 'attempt' },
      h('tr', {},
        h('td', { 'data-label': 'Time' }, formatTime(a.time)),
        h('td', { 'data-label': 'Status' }, badge(a.status === 'success' ? ['Succeeded', 'success'] : ['Failed', 'failed'])),
        h('td', { 'data-label': 'Code' }, a.code || '—'),
        h('td', { 'data-label': 'Topic' }, event.topic || '—'),
        showDestination ? h('td', { 'data-label': 'Destination' }, h('a', { href: `#/destinations/${enc(a.destination_id)}` }, destinationName(a.destination_id))) : null,
        h('td', { 'data-label': 'Event' }, h('code', {}, a.event_id || event.id || '')),
        h('td', { 'data-label': 'Actions' }, h('button', { type: 'button', class: 'secondary small', onclick: (e) => retry(e.currentTarget) }, 'Retry'))),
      h('tr', { class: 'more' }, h('td', { colspan: showDestination ? 7 : 6 },
        h('details', {}, h('summary', {}, 'Details'),
          h('dl', { class: 'facts' },
            h('dt', {}, 'Attempt'), h('dd', {}, `#${a.attempt_number ?? '?'}${a.manual ? ' (manual retry)' : ''}`),
            response && response.body != null ? [h('dt', {}, 'Response body'), h('dd', {}, response.body === '' ? h('span', { class: 'muted' }, '(empty)') : h('pre', { class: 'code' }, String(response.body)))] : null,
            a.error ? [h('dt', {}, 'Error'), h('dd', {}, String(a.error))] : null,
            event.data !== undefined ? [h('dt', {}, 'Event data'), h('dd', {}, h('pre', { class: 'code' }, JSON.stringify(event.data, null, 2)))] : null)))));
  });
  return h('table', { class: 'list attempts' },
    h('caption', { class: 'sr-only' }, 'Delivery attempts, newest first'),
    h('thead', {}, h('tr', {}, ['Time', 'Status', 'Code', 'Topic', showDestination ? 'Destination' : null, 'Event', 'Actions'].filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
    body);
}

function pager(hashBase, params, pagination) {
  const link = (cursorName, cursor, label) => {
    const next = new URLSearchParams(params);
    next.delete('next');
    next.delete('prev');
    next.set(cursorName, cursor);
    return h('a', { class: 'button secondary', href: `${hashBase}?${next}` }, label);
  };
  if (!pagination || (!pagination.next && !pagination.prev)) return null;
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    pagination.prev ? link('prev', pagination.prev, '← Newer') : null,
    pagination.next ? link('next', pagination.next, 'Older →') : null);
}

function filterBar(hashBase, params, destinations, statuses) {
  const destination = h('select', { id: nextId('dest'), name: 'destination_id' },
    h('option', { value: '' }, 'All destinations'),
    destinations.map((d) => h('option', { value: d.id, selected: params.get('destination_id') === d.id }, d.target || d.id)));
  const topic = h('input', { id: nextId('topic'), name: 'topic', type: 'text', value: params.get('topic') || '', autocomplete: 'off' });
  const status = statuses ? h('select', { id: nextId('status'), name: 'status' },
    [['', 'Any status'], ['success', 'Succeeded'], ['failed', 'Failed']].map(([v, l]) => h('option', { value: v, selected: (params.get('status') || '') === v }, l))) : null;
  const apply = (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (params.get('event_id')) next.set('event_id', params.get('event_id'));
    for (const control of [destination, topic, status]) if (control && control.value.trim()) next.set(control.name, control.value.trim());
    go(`${hashBase}${next.toString() ? `?${next}` : ''}`);
  };
  return h('form', { class: 'filters', role: 'search', onsubmit: apply },
    field('Destination', destination), field('Topic', topic), status ? field('Status', status) : null,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply'),
      h('button', { type: 'button', class: 'secondary', onclick: () => route() }, 'Refresh')));
}

function listQuery(params, names) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [param, apiName] of names) if (params.get(param)) query.append(apiName, params.get(param));
  return query;
}

async function viewActivity(params) {
  const query = listQuery(params, [['destination_id', 'destination_id[]'], ['topic', 'topic[]'], ['status', 'status'], ['event_id', 'event_id[]'], ['next', 'next'], ['prev', 'prev']]);
  query.append('include', 'event.data');
  query.append('include', 'response_data');
  const [page, destinations, types] = await Promise.all([api('GET', `/attempts?${query}`), api('GET', tenantPath('/destinations')), destinationTypes()]);
  return h('section', {},
    h('h1', { tabindex: '-1' }, 'Activity'),
    params.get('event_id') ? h('p', {}, 'Attempts for event ', h('code', {}, params.get('event_id')), ' · ', h('a', { href: '#/activity' }, 'all attempts')) : null,
    filterBar('#/activity', params, destinations, true),
    attemptsTable(page.models || [], types, destinations, { showDestination: true }),
    pager('#/activity', params, page.pagination));
}

async function viewEvents(params) {
  const query = listQuery(params, [['destination_id', 'destination_id[]'], ['topic', 'topic[]'], ['next', 'next'], ['prev', 'prev']]);
  const [page, destinations] = await Promise.all([api('GET', `/events?${query}`), api('GET', tenantPath('/destinations'))]);
  const events = page.models || [];
  return h('section', {},
    h('h1', { tabindex: '-1' }, 'Events'),
    filterBar('#/events', params, destinations, false),
    events.length === 0 ? h('p', { class: 'empty' }, 'No events yet.') : h('table', { class: 'list' },
      h('caption', { class: 'sr-only' }, 'Events, newest first'),
      h('thead', {}, h('tr', {}, ['Time', 'Topic', 'Event', 'Destinations'].map((t) => h('th', { scope: 'col' }, t)))),
      events.map((e) => h('tbody', {},
        h('tr', {},
          h('td', { 'data-label': 'Time' }, formatTime(e.time)),
          h('td', { 'data-label': 'Topic' }, e.topic || '—'),
          h('td', { 'data-label': 'Event' }, h('code', {}, e.id)),
          h('td', { 'data-label': 'Destinations' }, h('a', { href: `#/activity?event_id=${enc(e.id)}` }, `${(e.matched_destination_ids || []).length} · attempts`))),
        h('tr', { class: 'more' }, h('td', { colspan: 4 },
          h('details', {}, h('summary', {}, 'Data'), h('pre', { class: 'code' }, JSON.stringify(e.data, null, 2)))))))),
    pager('#/events', params, page.pagination));
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  if (!readToken()) return showNoLink();
  if (expired()) return showExpired();
  document.getElementById('nav').hidden = false;
  const left = session.expiresAt ? ` · link valid until ${session.expiresAt.toLocaleString()}` : '';
  document.getElementById('who').textContent = `Tenant ${session.tenantId}${left}`;
  if (session.expiresAt) {
    // Timers run at most ~24.8 days; past that the check before each call still holds.
    const wait = session.expiresAt.getTime() - Date.now();
    if (wait < 2 ** 31 - 1) setTimeout(showExpired, wait);
  }
  window.addEventListener('hashchange', () => {
    // A fresh portal link opened in this tab replaces the session: start over with it.
    if (location.hash.startsWith('#token=')) {
      readToken();
      location.reload();
      return;
    }
    route();
  });
  route();
}

start();
