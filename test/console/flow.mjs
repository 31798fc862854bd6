// The console's browser flow, run by console_test.go: Chromium driven by
// playwright-core. Every step waits for what the page shows; a step that
// never sees it fails the run with a screenshot of the page.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`flow.mjs needs $${k}`);
  return v;
};
const URL = env('CONSOLE_URL').replace(/\/$/, '');
const OUT = env('OUT');
const NS = env('TENANT_NS');
const OTHER = env('OTHER_NS');
const require = createRequire(path.join(env('CONSOLE_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const slow = 4 * 60 * 1000; // image pull and sandbox start of a first pod
const log = (...a) => console.log(new Date().toISOString().slice(11, 19), ...a);

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  // Root in a container: Chromium's sandbox needs user namespaces it may not have.
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
let page;
// Every refused or broken request is logged with what the console said:
// a step that fails then shows why the page did what it did.
const follow = (pg) => {
  pg.on('response', async (r) => {
    if (r.status() < 400) return;
    const u = r.url().replace(URL, '');
    let body = '';
    if (u.startsWith('/cci/') || r.status() === 401) body = (await r.text().catch(() => '')).slice(0, 300);
    log('  http', r.status(), r.request().method(), u.slice(0, 160), body);
  });
  pg.on('requestfailed', (r) => {
    const why = r.failure()?.errorText || '';
    // A page leaving aborts its watches and streams: not a failure.
    if (why !== 'net::ERR_ABORTED') log('  failed', r.method(), r.url().replace(URL, '').slice(0, 160), why);
  });
};
// go opens url in the page. Chromium aborts requests in flight when its
// machine's interfaces change (net::ERR_NETWORK_CHANGED); console_test.go
// runs it in a network namespace of its own, where nothing changes, but
// should that ever break the page itself or its script or style, go
// opens it again; the app's own requests retry by themselves.
const go = async (url) => {
  const again = /ERR_NETWORK_CHANGED|interrupted by another navigation/;
  for (let i = 0; ; i++) {
    let broke = false;
    const onFail = (r) => {
      const mine = r.isNavigationRequest() || new globalThis.URL(r.url()).pathname.startsWith('/assets/');
      if (mine && /ERR_NETWORK_CHANGED/.test(r.failure()?.errorText || '')) broke = true;
    };
    page.on('requestfailed', onFail);
    try {
      await page.goto(url);
      if (!broke || i === 5) return;
    } catch (e) {
      if (i === 5 || !(again.test(e.message) || broke)) throw e;
    } finally {
      page.off('requestfailed', onFail);
    }
    // Pods start and stop in bursts: let one pass.
    log('  the network changed under the page; opening it again');
    await new Promise((r) => setTimeout(r, 500 * 2 ** i));
  }
};
// deleteFromPage deletes an object with the page's own request (its
// cookie, its Origin): a request from outside the page without the cookie
// would be answered 401 with the cookie cleared. A DELETE the network
// broke is asked again; the second answer is then 404.
const deleteFromPage = async (p) => {
  const status = await page.evaluate(async (p) => {
    for (let i = 0; ; i++) {
      try {
        return (await fetch(p, { method: 'DELETE', credentials: 'same-origin' })).status;
      } catch (e) {
        if (i === 3) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }, p);
  if (status !== 200 && status !== 202 && status !== 404) throw new Error(`delete ${p}: ${status}`);
};
// control stops or starts the control plane (console_test.go serves it).
const control = async (what) => {
  const r = await fetch(`${env('CONTROL_URL')}/${what}`, { method: 'POST' });
  if (!r.ok) throw new Error(`${what} the control plane: ${r.status} ${await r.text()}`);
};
const shot = (name) => page.screenshot({ path: path.join(OUT, name), fullPage: true });
try {
  // The console's certificate is issued by the cluster's own CA.
  const tenant = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
  page = await tenant.newPage();
  follow(page);
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => log('page error:', e.message));

  log('a bad token is refused with the reason');
  await go(URL + '/');
  await page.waitForURL(/\/login$/);
  await page.fill('#token', 'not-a-real-token');
  await page.click('button[type=submit]');
  const refused = page.getByTestId('login-error');
  await refused.waitFor();
  const why = await refused.innerText();
  if (!/login refused/.test(why) || !/401|not valid/.test(why)) throw new Error(`bad token answer: ${why}`);
  log('  ', why);
  await shot('login-refused.png');

  log('the tenant logs in with its token');
  await page.fill('#token', env('TENANT_TOKEN'));
  await page.click('button[type=submit]');
  await page.waitForURL(new RegExp(`/ns/${NS}/overview$`));
  await page.getByTestId('running').waitFor();
  // The tenant reads its own quota (default pods=50); nothing is refused.
  await page.locator('td', { hasText: '/ 50' }).first().waitFor();
  if (await page.getByRole('alert').count() !== 0) throw new Error(`overview shows an error: ${await page.getByRole('alert').first().innerText()}`);
  await shot('overview.png');

  log('switches to Chinese and back');
  await page.getByRole('button', { name: '中文' }).click();
  await page.getByRole('link', { name: '工作负载' }).waitFor();
  await page.getByRole('button', { name: 'English' }).click();
  await page.getByRole('link', { name: 'Workloads' }).waitFor();

  log('create from YAML: a syntax error shows its line and column, the API refusal its field');
  const REGISTRY = env('IMAGE').split('/')[0];
  const setYaml = async (text) => {
    await page.locator('.cm-content').click();
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    // insertText: no Enter key events, so the editor does not indent by itself.
    await page.keyboard.insertText(text);
  };
  await go(`${URL}/ns/${NS}/workloads?tab=secrets`);
  await page.getByTestId('create-yaml-open').click();
  await setYaml('apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: [s3cr3t\n  user: admin\n');
  await page.getByTestId('yaml-submit').click();
  const yerr = await page.getByTestId('yaml-error').innerText();
  if (!/line \d+, column \d+/.test(yerr)) throw new Error(`YAML syntax error without line and column: ${yerr}`);
  log('  ', yerr.split('\n')[0]);
  await shot('yaml-error.png');
  await setYaml('apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: bad}}\n  template:\n    metadata: {labels: {app: bad}}\n    spec:\n      containers: [{name: app, image: x}]\n');
  await page.getByTestId('yaml-submit').click();
  await page.getByTestId('yaml-error').filter({ hasText: 'spec.replicas' }).waitFor();
  log('  ', (await page.getByTestId('yaml-error').innerText()).split('\n')[0]);

  log('a Secret from YAML: its keys and value not in the browser until asked');
  await setYaml('apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: s3cr3t-value\n');
  await page.getByTestId('yaml-submit').click();
  await page.getByTestId('yaml-created').waitFor();
  // Open the list again: its list request now has the Secret in it, and
  // must carry metadata only (no type, no data: the value's base64 is
  // czNjcjN0LXZhbHVl).
  const secretList = page.waitForResponse((r) => new globalThis.URL(r.url()).pathname === `/api/v1/namespaces/${NS}/secrets` && !r.url().includes('watch='));
  await go(`${URL}/ns/${NS}/workloads?tab=secrets`);
  const listBody = await (await secretList).text();
  if (!listBody.includes('"PartialObjectMetadataList"') || !listBody.includes('"db"') || /czNjcjN0|"data"|"type"/.test(listBody)) {
    throw new Error(`the Secret list is not metadata only: ${listBody.slice(0, 400)}`);
  }
  const secretRow = page.locator('tr[data-name="db"]');
  await secretRow.getByRole('button', { name: /Data/ }).click();
  const secretValue = page.getByTestId('secret-value').first();
  if ((await secretValue.innerText()).includes('s3cr3t')) throw new Error('the secret value shows before it is asked for');
  const secretGet = page.waitForResponse((r) => new globalThis.URL(r.url()).pathname === `/api/v1/namespaces/${NS}/secrets/db`);
  await page.getByTestId('secret-reveal').click();
  if ((await secretGet).status() !== 200) throw new Error(`reveal read the Secret with ${(await secretGet).status()}`);
  await secretValue.filter({ hasText: 's3cr3t-value' }).waitFor();
  await page.getByTestId('secret-type').filter({ hasText: 'Opaque' }).waitFor();
  await shot('secret.png');
  // The editor was closed when the list was opened again.
  await page.getByTestId('create-yaml-open').click();

  log('a pod with a missing image: the timeline shows the pull error');
  await setYaml(`apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n  - name: app\n    image: ${REGISTRY}/cci-test/does-not-exist:1\n    resources:\n      requests: {cpu: 250m, memory: 512Mi}\n      limits: {cpu: 250m, memory: 512Mi}\n`);
  await page.getByTestId('yaml-submit').click();
  await page.getByTestId('yaml-created').filter({ hasText: 'Pod noimage' }).waitFor();
  // A pod without a shell, for the exec step below.
  await setYaml(`apiVersion: v1\nkind: Pod\nmetadata:\n  name: noshell\nspec:\n  containers:\n  - name: app\n    image: ${REGISTRY}/cci-test/noshell:1\n    resources:\n      requests: {cpu: 250m, memory: 512Mi}\n      limits: {cpu: 250m, memory: 512Mi}\n`);
  await page.getByTestId('yaml-submit').click();
  await page.getByTestId('yaml-created').filter({ hasText: 'Pod noshell' }).waitFor();
  await go(`${URL}/ns/${NS}/pods/noimage`);
  await page.getByTestId('verdict').filter({ hasText: 'cannot be pulled' }).waitFor({ timeout: slow });
  await page.getByTestId('timeline').locator('tr.tl-error').first().waitFor();
  log('  ', await page.getByTestId('verdict').innerText());
  await shot('pod-timeline.png');
  await go(`${URL}/ns/${NS}/overview`);
  await page.getByTestId('pending').locator('tr[data-name="noimage"]', { hasText: /ErrImagePull|ImagePullBackOff/ }).waitFor();
  await deleteFromPage(`/api/v1/namespaces/${NS}/pods/noimage?gracePeriodSeconds=0`);

  log('creates a Deployment from the form');
  await go(`${URL}/ns/${NS}/workloads`);
  await page.getByTestId('create').click();
  await page.fill('#f-name', 'Bad_Name');
  await page.getByTestId('submit').click();
  await page.locator('.field-error').first().waitFor();
  await page.fill('#f-name', 'web');
  await page.fill('#f-image', env('IMAGE'));
  await page.fill('#f-command', 'echo hello-from-console; exec sleep 3600');
  await page.selectOption('#f-flavor', { index: 0 });
  const yaml = await page.getByTestId('yaml').innerText();
  for (const want of ['kind: Deployment', 'name: web', 'cpu: "0.25"', 'memory: 512Mi']) {
    if (!yaml.includes(want)) throw new Error(`the YAML lacks ${want}:\n${yaml}`);
  }
  await shot('create-form.png');
  await page.getByTestId('submit').click();
  await page.getByTestId('create-form').waitFor({ state: 'detached' });

  log("the API's refusal shows next to its field: the name is taken");
  await page.getByTestId('create').click();
  await page.fill('#f-name', 'web');
  await page.fill('#f-image', env('IMAGE'));
  await page.getByTestId('submit').click();
  const taken = await page.getByTestId('server-error-name').innerText();
  if (!/already exists/.test(taken)) throw new Error(`name taken: ${taken}`);
  log('  ', taken);
  await page.getByRole('button', { name: 'Cancel' }).click();

  log('sees its pod Running');
  await go(`${URL}/ns/${NS}/workloads?tab=pods`);
  const podRow = page.locator('tr[data-name^="web-"]').first();
  await podRow.locator('[data-testid=phase]', { hasText: 'Running' }).waitFor({ timeout: slow });
  const pod = await podRow.getAttribute('data-name');
  log('  pod', pod);

  log('reads its log');
  await podRow.locator('a').click();
  await page.waitForURL(new RegExp(`/ns/${NS}/pods/${pod}$`));
  await page.getByTestId('logs').filter({ hasText: 'hello-from-console' }).waitFor();

  log('runs echo hi in the exec terminal');
  await page.getByTestId('exec-connect').click();
  await page.getByTestId('exec-connected').waitFor();
  log('  ', await page.getByTestId('exec-connected').innerText());
  await page.locator('.xterm').click();
  await page.keyboard.type('echo hi\n');
  await page.waitForFunction(() => {
    const rows = document.querySelector('.xterm-rows');
    return rows && rows.innerText.split('\n').some((l) => l.trim() === 'hi');
  });
  await shot('pod-logs-exec.png');

  log('an exec into a container without a shell: a message, the page keeps working');
  await go(`${URL}/ns/${NS}/pods/noshell`);
  await page.getByTestId('pod-phase').filter({ hasText: 'Running' }).waitFor({ timeout: slow });
  await page.getByTestId('exec-connect').click();
  const noShell = page.getByTestId('no-shell');
  await noShell.waitFor();
  const noShellText = await noShell.innerText();
  if (!/no shell/.test(noShellText) || !/bash, sh/.test(noShellText)) throw new Error(`no-shell message: ${noShellText}`);
  log('  ', noShellText);
  // The rest of the page goes on: its watch is live, it shows no error,
  // and the terminal may be connected again.
  await page.getByTestId('live').waitFor();
  await page.getByTestId('exec-connect').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('[role=alert]').length === 0);
  await shot('exec-no-shell.png');
  await deleteFromPage(`/api/v1/namespaces/${NS}/pods/noshell?gracePeriodSeconds=0`);

  log('scales it to 3: the list follows by its watch');
  await go(`${URL}/ns/${NS}/workloads?tab=deployments`);
  await page.getByTestId('live').waitFor();
  const depRow = page.locator('tr[data-name="web"]');
  page.once('dialog', (d) => d.accept('3'));
  await depRow.getByRole('button', { name: 'Scale' }).click();
  await depRow.locator('td', { hasText: '3/3' }).waitFor({ timeout: slow });
  await shot('scaled.png');
  await depRow.getByRole('link', { name: 'web' }).click();
  await page.getByTestId('rollout-status').filter({ hasText: 'successfully rolled out' }).waitFor({ timeout: slow });
  await page.getByTestId('history').locator('tr[data-revision="1"]').waitFor();

  log('restarts it, then rolls it back to revision 1 (kubectl rollout undo --to-revision=1)');
  const history = page.getByTestId('history');
  const firstRS = await history.locator('tr[data-revision="1"] td').nth(1).innerText();
  await page.getByTestId('restart').click();
  await history.locator('tr.current[data-revision="2"]').waitFor({ timeout: slow });
  page.once('dialog', (d) => d.accept());
  await history.locator('tr[data-revision="1"]').getByTestId('rollback').click();
  // The controller takes revision 1's ReplicaSet back and numbers it 3.
  const rolledBack = history.locator('tr.current[data-revision="3"]');
  await rolledBack.waitFor({ timeout: slow });
  const rs3 = await rolledBack.locator('td').nth(1).innerText();
  if (rs3 !== firstRS) throw new Error(`revision 3 is ReplicaSet ${rs3}, want revision 1's ${firstRS}`);
  await page.getByTestId('rollout-status').filter({ hasText: 'successfully rolled out' }).waitFor({ timeout: slow });
  await shot('rollback.png');

  log('sees its usage grow');
  await go(`${URL}/ns/${NS}/usage`);
  const total = page.getByTestId('usage-total');
  await page.getByTestId('usage-table').locator('td', { hasText: pod }).waitFor({ timeout: 60000 });
  await page.getByTestId('usage-namespaces').locator(`tr[data-name="${NS}"]`).waitFor();
  // By day: today's row (UTC) has core-seconds, and each quantity has its chart.
  const today = new Date().toISOString().slice(0, 10);
  const todayRow = page.getByTestId('usage-days').locator(`tr[data-date="${today}"]`);
  await todayRow.waitFor();
  if (!(parseFloat(await todayRow.locator('td').nth(1).innerText()) > 0)) throw new Error(`no core-seconds today: ${await todayRow.innerText()}`);
  for (const c of ['day-cost', 'day-core', 'day-gib', 'day-gpu']) await page.getByTestId(c).locator('canvas').waitFor();
  const download = page.waitForEvent('download');
  await page.getByTestId('usage-csv').click();
  const csvText = await (await download).createReadStream().then((st) => new Promise((res, rej) => {
    let b = '';
    st.on('data', (d) => { b += d; });
    st.on('end', () => res(b));
    st.on('error', rej);
  }));
  if (!csvText.startsWith('kind,date,') || !csvText.includes(`\npod,,`) || !csvText.includes(`\nday,${today},`)) {
    throw new Error(`the CSV lacks pod or day rows:\n${csvText.slice(0, 400)}`);
  }
  const first = parseFloat(await total.innerText());
  log('  cost', first);
  // The page polls; running pods add cost every second.
  await page.waitForFunction((before) => {
    const v = parseFloat(document.querySelector('[data-testid=usage-total]')?.textContent || '0');
    return v > before;
  }, first, { timeout: 120000 });
  await shot('usage.png');

  log('deletes it');
  await go(`${URL}/ns/${NS}/workloads?tab=deployments`);
  page.once('dialog', (d) => d.accept());
  await page.locator('tr[data-name="web"]').getByRole('button', { name: 'Delete' }).click();
  await page.locator('tr[data-name="web"]').waitFor({ state: 'detached' });

  log('the control plane restarts under an open page: its list reconnects by itself');
  await go(`${URL}/ns/${NS}/workloads?tab=configmaps`);
  await page.getByTestId('live').waitFor();
  await control('stop');
  await page.getByTestId('live-retry').waitFor();
  log('  ', await page.getByTestId('live-retry').getAttribute('title'));
  await control('start');
  // The watch waits up to 36 s between tries (30 s plus a fifth).
  await page.getByTestId('live').waitFor({ timeout: 120000 });
  // Live again: a ConfigMap made now shows up in the list by itself.
  const made = await page.evaluate(async (p) => (await fetch(p, {
    method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'after-restart' }, data: { k: 'v' } }),
  })).status, `/api/v1/namespaces/${NS}/configmaps`);
  if (made !== 201) throw new Error(`create a ConfigMap after the restart: ${made}`);
  await page.locator('tr[data-name="after-restart"]').waitFor({ timeout: 60000 });
  await shot('reconnected.png');

  log("cannot see another tenant's pods: the API's 403 is shown");
  await go(`${URL}/ns/${OTHER}/workloads?tab=pods`);
  const denied = page.getByRole('alert');
  await denied.waitFor();
  const text = await denied.innerText();
  if (!/403/.test(text) || !/forbidden/i.test(text) || !text.includes(OTHER)) throw new Error(`other namespace answer: ${text}`);
  if (await page.locator('tr[data-name]').count() !== 0) throw new Error('rows of another namespace are shown');
  log('  ', text);
  await shot('forbidden.png');

  log('the operator logs in with the admin kubeconfig and sees tenants and hosts');
  const op = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
  page = await op.newPage();
  follow(page);
  page.setDefaultTimeout(30000);
  await go(URL + '/login');
  await page.setInputFiles('#kubeconfig', env('ADMIN_KUBECONFIG'));
  await page.click('button[type=submit]');
  await page.waitForURL(/\/overview$/);
  await go(URL + '/operator/tenants');
  for (const t of [NS, OTHER]) await page.getByTestId('tenants').locator('td', { hasText: t }).first().waitFor();
  // With its cost this month: the tenant's pods ran.
  await page.getByTestId('tenants').locator(`tr[data-name="${NS}"] [data-testid=tenant-cost]`).filter({ hasText: /[1-9]/ }).waitFor({ timeout: 60000 });
  await shot('tenants.png');
  await go(URL + '/operator/hosts');
  await page.getByTestId('hosts').locator('tbody tr').first().waitFor();
  await shot('hosts.png');
  await go(URL + '/operator/pools');
  await page.getByTestId('pools').locator('tr[data-name="general"]').waitFor();
  await go(URL + '/operator/registry');
  await page.getByTestId('registry').locator('tr[data-name="cci-test/shell"]').waitFor();
  await shot('pools-registry.png');

  log('a session whose token is revoked goes back to login with a message');
  const other = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
  page = await other.newPage();
  follow(page);
  page.setDefaultTimeout(30000);
  await go(URL + '/login');
  await page.fill('#token', env('OTHER_TOKEN'));
  await page.click('button[type=submit]');
  await page.waitForURL(new RegExp(`/ns/${OTHER}/overview$`));
  await go(`${URL}/ns/${OTHER}/workloads?tab=pods`);
  await page.getByTestId('live').waitFor();
  // Deleting the tenant deletes its service account and token. The open
  // watch sees no error; the page's session check (every 30 s, and on
  // each 403) finds the API refusing the token.
  execFileSync(env('CCI_BIN'), ['tenant', 'delete', OTHER, '--wait=false', '--data-dir', env('CCI_DATA_DIR')], { stdio: 'inherit' });
  await page.waitForURL(/\/login$/, { timeout: 120000 });
  const ended = await page.getByRole('status').innerText();
  if (!/session ended/i.test(ended) || !/revoked/.test(ended)) throw new Error(`login page after revocation says: ${ended}`);
  log('  ', ended);
  await shot('session-ended.png');
  log('done');
} catch (e) {
  if (page) await shot('failure.png').catch(() => {});
  console.error('FAILED:', e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
