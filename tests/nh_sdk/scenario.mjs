// SDK-driven integration scenario for tagcast's Azure Notification Hubs-compatible server mode.
//
// Drives the unchanged official JavaScript SDK (@azure/notification-hubs 2.1.0) against a running
// server and asserts what the SDK returns. Contract: /work/shared/design/nh-rest-api.md.
// Env contract and steps: README.md beside this file.
//
// Output: the last line of stdout is one JSON object:
//   success: {"ok":true,"run":"...","steps":[...],"sends":[{step,notificationId,expect:[...],forbid:[...]}]}
//   failure: {"ok":false,"run":"...","failedStep":"...","steps":[passed steps...]} and exit code 1,
//            with the details (status code, message, response body) on stderr.
// `expect` lists pushes that must arrive at the mock push services (platform, handle, substring of
// the delivered payload); `forbid` (optional) lists handles that must NOT receive a push whose
// payload contains that substring.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  NotificationHubsClient,
  createAppleInstallation,
  createFcmV1Installation,
  createBrowserInstallation,
  createWindowsInstallation,
  createAppleNotification,
  createAppleNotificationBody,
  createFcmV1Notification,
  createFirebaseV1NotificationBody,
  createBrowserNotification,
  createWindowsToastNotification,
  createTemplateNotification,
  createAppleRegistrationDescription,
  createAppleTemplateRegistrationDescription,
  createFcmV1RegistrationDescription,
} from "@azure/notification-hubs";

// ---------------------------------------------------------------------------------------------
// Limits: every SDK call is aborted after CALL_TIMEOUT_MS, every step after STEP_TIMEOUT_MS, the
// whole run after RUN_TIMEOUT_MS. The SDK's retry policy is switched off (maxRetries: 0) so a 5xx
// or 408 surfaces at once instead of after exponential backoff.
const CALL_TIMEOUT_MS = Number(process.env.NH_CALL_TIMEOUT_MS ?? 10_000);
const STEP_TIMEOUT_MS = Number(process.env.NH_STEP_TIMEOUT_MS ?? 20_000);
const OUTCOME_POLL_MS = Number(process.env.NH_OUTCOME_POLL_MS ?? 10_000);
const RUN_TIMEOUT_MS = Number(process.env.NH_RUN_TIMEOUT_MS ?? 180_000);
const MAX_LIST_PAGES = 200;

// ---------------------------------------------------------------------------------------------
// Environment

function fatal(msg) {
  process.stderr.write(`nh_sdk scenario: ${msg}\n`);
  process.stdout.write(JSON.stringify({ ok: false, failedStep: "env", steps: [], error: msg }) + "\n");
  process.exit(1);
}

function envStr(name) {
  const v = process.env[name];
  if (v === undefined || v.trim() === "") fatal(`environment variable ${name} is not set`);
  return v.trim();
}

function envList(name, min) {
  const list = envStr(name)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (list.length < min) fatal(`${name} needs at least ${min} entries, got ${list.length}`);
  return list;
}

const HUB = envStr("NH_HUB");
const CS_MANAGE = envStr("NH_CS_MANAGE");
const CS_SEND = envStr("NH_CS_SEND");
const CS_LISTEN = envStr("NH_CS_LISTEN");
const CS_BADKEY = envStr("NH_CS_BADKEY");
const APNS = envList("NH_APNS_TOKENS", 4);
const FCM = envList("NH_FCM_TOKENS", 3);
const WNS = envList("NH_WNS_CHANNELS", 1);
// Optional: the OutputContainerUri of the import/export job steps (e.g. file:///out); without
// it those steps are skipped (a server without [hub.jobs]).
const JOBS_CONTAINER = process.env.NH_JOBS_CONTAINER?.trim() || undefined;
let WEBPUSH;
try {
  WEBPUSH = JSON.parse(envStr("NH_WEBPUSH_SUBS"));
} catch (e) {
  fatal(`NH_WEBPUSH_SUBS is not valid JSON: ${e.message}`);
}
if (
  !Array.isArray(WEBPUSH) ||
  WEBPUSH.length < 2 ||
  !WEBPUSH.every((s) => s && typeof s.endpoint === "string" && typeof s.p256dh === "string" && typeof s.auth === "string")
) {
  fatal("NH_WEBPUSH_SUBS must be a JSON array of at least 2 {endpoint,p256dh,auth} objects");
}
WEBPUSH = WEBPUSH.map(({ endpoint, p256dh, auth }) => ({ endpoint, p256dh, auth }));

// Device roles (a token may serve several steps; every send has its own payload marker, so the
// delivery checks never confuse two sends).
//   APNS[0] installation "apns" (tags, userId, template)   APNS[1] installation made with the Listen key, direct send
//   APNS[2] patch installation (before), direct batch, Apple registration
//   APNS[3] patch installation (after),  direct batch, Apple template registration
//   FCM[0] installation "fcm"   FCM[1] expression match   FCM[2] expression non-match, deleted installation, FcmV1 registration
//   WEBPUSH[0] installation "browser"   WEBPUSH[1] direct browser send
//   WNS[0] installation "wns"
const [A0, A1, A2, A3] = APNS;
const [F0, F1, F2] = FCM;
const [B0, B1] = WEBPUSH;
const [W0] = WNS;

// Unique per run, so reruns against a long-lived server do not interfere. Tags use only [a-z0-9.-].
const RUN = `r${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const tag = (name) => `${RUN}.${name}`;
const iid = (name) => `${RUN}-${name}`;
const mark = (name) => `${name}-${RUN}`; // payload marker checked at the mock push services

// ---------------------------------------------------------------------------------------------
// Clients

// The server is local: make sure an HTTP(S)_PROXY in the environment is not used for it (the SDK
// honours proxy variables and reads NO_PROXY when a client is constructed, i.e. after this line).
{
  const m = /Endpoint=\s*[a-z]+:\/\/([^/:;]+)/i.exec(CS_MANAGE);
  const hosts = ["127.0.0.1", "localhost", ...(m ? [m[1]] : [])];
  for (const v of ["NO_PROXY", "no_proxy"]) {
    const cur = (process.env[v] ?? "").split(",").map((h) => h.trim()).filter(Boolean);
    process.env[v] = [...new Set([...cur, ...hosts])].join(",");
  }
}

const clientOptions = { retryOptions: { maxRetries: 0 } };
const manage = new NotificationHubsClient(CS_MANAGE, HUB, clientOptions);
const sendOnly = new NotificationHubsClient(CS_SEND, HUB, clientOptions);
const listen = new NotificationHubsClient(CS_LISTEN, HUB, clientOptions);
const badKey = new NotificationHubsClient(CS_BADKEY, HUB, clientOptions);

/** Operation options with a per-call abort timeout, merged with `extra`. */
const o = (extra = {}) => ({ abortSignal: AbortSignal.timeout(CALL_TIMEOUT_MS), ...extra });

// ---------------------------------------------------------------------------------------------
// Step runner and reporting

const passed = [];
const sends = [];
let currentStep = "(setup)";

function describeError(err) {
  const lines = [];
  if (err === null || typeof err !== "object") return String(err);
  lines.push(`${err.name ?? "Error"}: ${err.message}`);
  if (err.statusCode !== undefined) lines.push(`  statusCode: ${err.statusCode}`);
  if (err.code !== undefined) lines.push(`  code: ${err.code}`);
  if (err.name === "AbortError") lines.push(`  (an SDK call took longer than the per-call timeout of ${CALL_TIMEOUT_MS} ms)`);
  if (err.response) {
    const r = err.response;
    if (r.request?.method || r.request?.url) lines.push(`  request: ${r.request.method} ${r.request.url}`);
    if (r.status !== undefined) lines.push(`  response status: ${r.status}`);
    const hdrs = r.headers?.toJSON ? r.headers.toJSON() : undefined;
    if (hdrs) lines.push(`  response headers: ${JSON.stringify(hdrs)}`);
    if (r.bodyAsText !== undefined && r.bodyAsText !== null) {
      const body = String(r.bodyAsText);
      lines.push(`  response body: ${body.length > 2000 ? body.slice(0, 2000) + "...(truncated)" : body}`);
    }
  }
  if (err.cause) lines.push(`  cause: ${err.cause?.message ?? err.cause}`);
  if (err.stack) lines.push(err.stack.split("\n").slice(1, 8).join("\n"));
  return lines.join("\n");
}

function failAndExit(step, err) {
  process.stderr.write(`nh_sdk scenario: step "${step}" FAILED\n${describeError(err)}\n`);
  process.stdout.write(JSON.stringify({ ok: false, run: RUN, failedStep: step, steps: passed }) + "\n");
  process.exit(1);
}

async function step(name, fn, timeoutMs = STEP_TIMEOUT_MS) {
  currentStep = name;
  const started = Date.now();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const r = await Promise.race([fn(), timeout]);
    passed.push(name);
    process.stderr.write(`ok   ${name} (${Date.now() - started} ms)\n`);
    return r;
  } catch (err) {
    failAndExit(name, err);
  } finally {
    clearTimeout(timer);
  }
}

/** Awaits `promise` and asserts it rejects with an SDK RestError of the given HTTP status. */
async function expectStatus(promise, status, what) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    if (err?.statusCode === status) return err;
    const e = new Error(`${what}: expected HTTP ${status}, got ${err?.statusCode ?? "no status"}: ${err?.message}`);
    e.statusCode = err?.statusCode;
    e.response = err?.response;
    e.cause = err;
    throw e;
  }
  throw new Error(`${what}: expected HTTP ${status}, but the call succeeded: ${JSON.stringify(result)?.slice(0, 500)}`);
}

const apnsExp = (token, contains) => ({ platform: "apns", handle: token, contains });
const fcmExp = (token, contains) => ({ platform: "fcm", handle: token, contains });
const webExp = (sub, contains) => ({ platform: "browser", handle: sub.endpoint, contains });
const wnsExp = (uri, contains) => ({ platform: "wns", handle: uri, contains });

/** Asserts the common shape of a non-test send result and records the delivery expectations. */
function recordSend(stepName, res, expect, forbid = []) {
  assert.equal(typeof res.notificationId, "string", "notificationId must be defined (absolute Location header)");
  assert.ok(res.notificationId.length > 0, "notificationId must not be empty");
  assert.equal(res.state, "Enqueued");
  const entry = { step: stepName, notificationId: res.notificationId, expect };
  if (forbid.length > 0) entry.forbid = forbid;
  sends.push(entry);
  return res;
}

const sameSet = (actual, expected, msg) =>
  assert.deepEqual([...(actual ?? [])].sort(), [...expected].sort(), msg);
const userTags = (tags) => (tags ?? []).filter((t) => !t.startsWith("$"));
const lc = (s) => String(s).toLowerCase();

// Polls getNotificationOutcomeDetails until state is Completed (404 and non-final states retried).
async function waitCompleted(id, countsField, expectedSuccess) {
  const deadline = Date.now() + OUTCOME_POLL_MS;
  let last = "no response yet";
  for (;;) {
    try {
      const d = await manage.getNotificationOutcomeDetails(id, o());
      last = `state=${d.state}`;
      if (d.state === "Completed") {
        if (d.notificationId !== undefined) assert.equal(d.notificationId, id);
        const counts = d[countsField];
        assert.ok(Array.isArray(counts), `${countsField} must be an array, got ${JSON.stringify(counts)}`);
        const success = counts.find((c) => c.state === "Success");
        assert.ok(success, `${countsField} has no Success entry: ${JSON.stringify(counts)}`);
        assert.equal(success.count, expectedSuccess, `${countsField} Success count: ${JSON.stringify(counts)}`);
        return d;
      }
      if (["Abandoned", "NoTargetFound", "Cancelled", "Unknown"].includes(d.state)) {
        throw new Error(`notification ${id} ended in state ${d.state}: ${JSON.stringify(d)}`);
      }
    } catch (err) {
      if (err?.statusCode !== 404) throw err;
      last = "404";
    }
    if (Date.now() > deadline) throw new Error(`notification ${id} not Completed within ${OUTCOME_POLL_MS} ms (last: ${last})`);
    await sleep(250);
  }
}

// Collects all items of a paged listing, bounding the number of pages.
async function collect(iter) {
  const out = [];
  let pages = 0;
  for await (const page of iter.byPage()) {
    out.push(...page);
    if (++pages > MAX_LIST_PAGES) throw new Error(`listing did not end after ${MAX_LIST_PAGES} pages (continuation token loop?)`);
  }
  return out;
}

const watchdog = setTimeout(() => failAndExit(currentStep, new Error(`whole run exceeded ${RUN_TIMEOUT_MS} ms`)), RUN_TIMEOUT_MS);
watchdog.unref();

// =============================================================================================
// Installations (§4.1, §5)

const apnsTemplateBody = JSON.stringify({ aps: { alert: "{$(greeting) + ' from template'}" } });
const instApns = createAppleInstallation({
  installationId: iid("apns"),
  pushChannel: A0,
  tags: [tag("apns"), tag("common")],
  userId: `user-${RUN}`,
  templates: {
    greet: { body: apnsTemplateBody, headers: {}, tags: [tag("tpl")] },
  },
});
const instFcm = createFcmV1Installation({ installationId: iid("fcm"), pushChannel: F0, tags: [tag("fcm"), tag("common")] });
const instBrowser = createBrowserInstallation({ installationId: iid("browser"), pushChannel: B0, tags: [tag("browser")] });
const instWns = createWindowsInstallation({ installationId: iid("wns"), pushChannel: W0, tags: [tag("wns")] });

await step("inst-create-apns", async () => {
  const r = await manage.createOrUpdateInstallation(instApns, o());
  assert.ok(r && typeof r === "object");
});
await step("inst-create-fcmv1", () => manage.createOrUpdateInstallation(instFcm, o()));
await step("inst-create-browser", () => manage.createOrUpdateInstallation(instBrowser, o()));
await step("inst-create-wns", () => manage.createOrUpdateInstallation(instWns, o()));
await step("inst-create-expr", async () => {
  await manage.createOrUpdateInstallation(
    createFcmV1Installation({ installationId: iid("expr-yes"), pushChannel: F1, tags: [tag("x"), tag("y")] }),
    o(),
  );
  await manage.createOrUpdateInstallation(
    createFcmV1Installation({ installationId: iid("expr-no"), pushChannel: F2, tags: [tag("x"), tag("y"), tag("z")] }),
    o(),
  );
});
await step("inst-upsert-same-id", async () => {
  // PUT is an upsert: a second PUT of the same id replaces it (tags updated, not duplicated).
  await manage.createOrUpdateInstallation({ ...instWns, tags: [tag("wns"), tag("wns2")] }, o());
  const got = await manage.getInstallation(instWns.installationId, o());
  sameSet(userTags(got.tags), [tag("wns"), tag("wns2")]);
});

await step("inst-get-apns", async () => {
  const got = await manage.getInstallation(instApns.installationId, o());
  assert.equal(got.installationId, instApns.installationId);
  assert.equal(got.platform, "apns");
  assert.equal(lc(got.pushChannel), lc(A0));
  sameSet(userTags(got.tags), instApns.tags, "tags");
  assert.equal(got.userId, instApns.userId);
  assert.ok(got.templates && got.templates.greet, `templates.greet missing: ${JSON.stringify(got.templates)}`);
  assert.equal(got.templates.greet.body, apnsTemplateBody);
  sameSet(got.templates.greet.tags, [tag("tpl")], "template tags");
});
await step("inst-get-fcmv1", async () => {
  const got = await manage.getInstallation(instFcm.installationId, o());
  assert.equal(got.installationId, instFcm.installationId);
  assert.equal(got.platform, "fcmv1");
  assert.equal(got.pushChannel, F0);
  sameSet(userTags(got.tags), instFcm.tags, "tags");
  assert.equal(got.userId, undefined);
});
await step("inst-get-browser", async () => {
  const got = await manage.getInstallation(instBrowser.installationId, o());
  assert.equal(got.installationId, instBrowser.installationId);
  assert.equal(got.platform, "browser");
  assert.deepEqual(got.pushChannel, B0);
  sameSet(userTags(got.tags), instBrowser.tags, "tags");
});
await step("inst-get-wns", async () => {
  const got = await manage.getInstallation(instWns.installationId, o());
  assert.equal(got.installationId, instWns.installationId);
  assert.equal(got.platform, "wns");
  assert.equal(got.pushChannel, W0);
});

const patchTemplateBody = JSON.stringify({ aps: { alert: "$(msg)" } });
await step("inst-create-patch", () =>
  manage.createOrUpdateInstallation(
    createAppleInstallation({ installationId: iid("patch"), pushChannel: A2, tags: [tag("p1"), tag("p2"), tag("p3")] }),
    o(),
  ),
);
await step("inst-patch", async () => {
  await manage.updateInstallation(
    iid("patch"),
    [
      { op: "add", path: "/tags", value: tag("p4") },
      { op: "remove", path: `/tags/${tag("p1")}` },
      { op: "replace", path: "/pushChannel", value: A3 },
      { op: "add", path: "/templates/extra", value: JSON.stringify({ body: patchTemplateBody, headers: {}, tags: [tag("ptpl")] }) },
      { op: "add", path: "/userId", value: `puser-${RUN}` },
    ],
    o(),
  );
  // a second PATCH that only removes a tag
  await manage.updateInstallation(iid("patch"), [{ op: "remove", path: `/tags/${tag("p2")}` }], o());
});
await step("inst-patch-get", async () => {
  const got = await manage.getInstallation(iid("patch"), o());
  assert.equal(got.installationId, iid("patch"));
  assert.equal(got.platform, "apns");
  assert.equal(lc(got.pushChannel), lc(A3), "pushChannel replaced");
  sameSet(userTags(got.tags), [tag("p3"), tag("p4")], "tags after add p4, remove p1, remove p2");
  assert.equal(got.userId, `puser-${RUN}`);
  assert.ok(got.templates && got.templates.extra, `templates.extra missing: ${JSON.stringify(got.templates)}`);
  assert.equal(got.templates.extra.body, patchTemplateBody);
});

await step("inst-delete", async () => {
  await manage.createOrUpdateInstallation(
    createFcmV1Installation({ installationId: iid("del"), pushChannel: F2, tags: [tag("del")] }),
    o(),
  );
  await manage.getInstallation(iid("del"), o());
  await manage.deleteInstallation(iid("del"), o());
});
await step("inst-get-deleted-404", () => expectStatus(manage.getInstallation(iid("del"), o()), 404, "get deleted installation"));

// =============================================================================================
// Errors

await step("err-invalid-apns-token-400", () =>
  expectStatus(
    manage.createOrUpdateInstallation(
      createAppleInstallation({ installationId: iid("bad-token"), pushChannel: "this-is-not-hex!", tags: [tag("bad")] }),
      o(),
    ),
    400,
    "installation with a non-hex APNs token",
  ),
);
await step("err-unknown-installation-404", () =>
  expectStatus(manage.getInstallation(iid("never-created"), o()), 404, "get unknown installation"),
);
await step("err-payload-413", () =>
  expectStatus(
    manage.sendNotification(
      createAppleNotification({ body: { aps: { alert: "x".repeat(70 * 1024) } } }),
      o({ tagExpression: tag("nobody") }),
    ),
    413,
    "70 KiB apple body",
  ),
);

// =============================================================================================
// Security (§2 rights model)

await step("sec-listen-create-installation", async () => {
  await listen.createOrUpdateInstallation(
    createAppleInstallation({ installationId: iid("listen"), pushChannel: A1, tags: [tag("listen")] }),
    o(),
  );
  // One read policy for installations and registrations (NH's rights model): Listen reads an
  // installation, but never a Web Push subscription's secrets; Manage reads them.
  const mine = await listen.getInstallation(iid("listen"), o());
  assert.equal(mine.installationId, iid("listen"));
  const browserByListen = await listen.getInstallation(iid("browser"), o());
  assert.equal(browserByListen.pushChannel.endpoint, B0.endpoint);
  assert.equal(browserByListen.pushChannel.p256dh, undefined, "Listen must not read p256dh");
  assert.equal(browserByListen.pushChannel.auth, undefined, "Listen must not read auth");
  const browserByManage = await manage.getInstallation(iid("browser"), o());
  assert.equal(browserByManage.pushChannel.p256dh, B0.p256dh);
  assert.equal(browserByManage.pushChannel.auth, B0.auth);
});
await step("sec-listen-send-403", () =>
  expectStatus(
    listen.sendNotification(createAppleNotification({ body: { aps: { alert: mark("listen-must-not-send") } } }), o({ tagExpression: tag("listen") })),
    403,
    "send with the Listen key",
  ),
);
await step("sec-listen-list-registrations-403", () =>
  expectStatus(collect(listen.listRegistrations(o())), 403, "list all registrations with the Listen key"),
);
await step("sec-badkey-401", async () => {
  await expectStatus(badKey.getInstallation(iid("apns"), o()), 401, "getInstallation with a wrong key");
  await expectStatus(
    badKey.createOrUpdateInstallation(createAppleInstallation({ installationId: iid("badkey"), pushChannel: A1 }), o()),
    401,
    "createOrUpdateInstallation with a wrong key",
  );
  await expectStatus(
    badKey.sendNotification(createAppleNotification({ body: { aps: { alert: mark("badkey-must-not-send") } } }), o({ tagExpression: tag("listen") })),
    401,
    "sendNotification with a wrong key",
  );
});
await step("sec-send-get-installation-403", () =>
  expectStatus(sendOnly.getInstallation(iid("apns"), o()), 403, "getInstallation with the Send key"),
);
await step("sec-send-key-can-send", async () => {
  const res = await sendOnly.sendNotification(
    createAppleNotification({ body: { aps: { alert: mark("sendkey") } } }),
    o({ tagExpression: tag("listen") }),
  );
  recordSend("sec-send-key-can-send", res, [apnsExp(A1, mark("sendkey"))], [apnsExp(A1, mark("listen-must-not-send")), apnsExp(A1, mark("badkey-must-not-send"))]);
});

// =============================================================================================
// Scheduled sends (§4.3). The broadcast fires ~2 s from now, during the run.

let schedFireAt = 0;
await step("sched-broadcast", async () => {
  schedFireAt = Date.now() + 2000;
  const res = await manage.scheduleBroadcastNotification(
    new Date(schedFireAt),
    createFcmV1Notification({
      body: createFirebaseV1NotificationBody({ message: { notification: { title: "scheduled", body: mark("sched-bcast") }, data: { k: "v" } } }),
    }),
    o(),
  );
  // fcm installations alive when it fires: "fcm" (F0), "expr-yes" (F1). F2 is not: "del"
  // took the handle over from "expr-no" (a handle has one owner per platform in tagcast) and
  // was then deleted.
  recordSend("sched-broadcast", res, [F0, F1].map((t) => fcmExp(t, mark("sched-bcast"))));
});
let cancelledId;
await step("sched-tag", async () => {
  const res = await manage.scheduleNotification(
    new Date(Date.now() + 60_000),
    createAppleNotification({ body: { aps: { alert: mark("sched-cancelled") } } }),
    o({ tagExpression: tag("apns") }),
  );
  assert.equal(typeof res.notificationId, "string");
  assert.ok(res.notificationId.length > 0);
  assert.equal(res.state, "Enqueued");
  cancelledId = res.notificationId;
});
await step("sched-cancel", async () => {
  const r = await manage.cancelScheduledNotification(cancelledId, o());
  assert.ok(r && typeof r === "object");
  // only meaningful if the deliveries are checked more than a minute later
  sends.push({ step: "sched-cancel", notificationId: cancelledId, expect: [], forbid: [apnsExp(A0, mark("sched-cancelled"))] });
});

// =============================================================================================
// Sends (§4.2)

const ids = {};

await step("send-apple-tag", async () => {
  const res = await manage.sendNotification(
    createAppleNotification({
      body: createAppleNotificationBody({ aps: { alert: { title: "tagcast", body: mark("apple-tag") }, badge: 1, sound: "default" } }),
      headers: { "apns-priority": "10", "apns-push-type": "alert", "apns-expiration": "0", "apns-topic": "com.example.tagcast" },
    }),
    o({ tagExpression: `${tag("apns")} && ${tag("common")}` }),
  );
  ids.appleTag = recordSend("send-apple-tag", res, [apnsExp(A0, mark("apple-tag"))]).notificationId;
});
await step("send-fcmv1-tag", async () => {
  const res = await manage.sendNotification(
    // the official samples wrap the FCM v1 message in {"message": {...}} (no token)
    createFcmV1Notification({
      body: createFirebaseV1NotificationBody({ message: { notification: { title: "tagcast", body: mark("fcm-tag") }, data: { step: "fcm" } } }),
    }),
    o({ tagExpression: tag("fcm") }),
  );
  ids.fcmTag = recordSend("send-fcmv1-tag", res, [fcmExp(F0, mark("fcm-tag"))]).notificationId;
});
await step("send-browser-tag", async () => {
  const res = await manage.sendNotification(
    createBrowserNotification({ body: { title: "tagcast", body: mark("browser-tag") } }),
    o({ tagExpression: tag("browser") }),
  );
  ids.browserTag = recordSend("send-browser-tag", res, [webExp(B0, mark("browser-tag"))]).notificationId;
});
await step("send-wns-toast-tag", async () => {
  const res = await manage.sendNotification(
    createWindowsToastNotification({
      body: `<toast><visual><binding template="ToastGeneric"><text>tagcast</text><text>${mark("wns-tag")}</text></binding></visual></toast>`,
    }),
    o({ tagExpression: tag("wns") }),
  );
  ids.wnsTag = recordSend("send-wns-toast-tag", res, [wnsExp(W0, mark("wns-tag"))]).notificationId;
});
await step("send-apple-broadcast", async () => {
  const res = await manage.sendBroadcastNotification(createAppleNotification({ body: { aps: { alert: mark("apple-bcast") } } }), o());
  // apns installations alive now: "apns" (A0), "listen" (A1), "patch" (now A3)
  recordSend("send-apple-broadcast", res, [A0, A1, A3].map((t) => apnsExp(t, mark("apple-bcast"))));
});
const greeting = `tpl-${RUN}`;
await step("send-template-tag", async () => {
  const res = await manage.sendNotification(createTemplateNotification({ body: { greeting } }), o({ tagExpression: tag("tpl") }));
  recordSend("send-template-tag", res, [apnsExp(A0, `${greeting} from template`)]);
});
await step("send-tag-expression", async () => {
  // matches "expr-yes" (x,y) but not "expr-no" (x,y,z)
  const expr = `(${tag("x")} && ${tag("y")} && !${tag("z")}) || ${tag("nobody")}`;
  const res = await manage.sendNotification(
    createFcmV1Notification({ body: createFirebaseV1NotificationBody({ message: { notification: { title: "expr", body: mark("expr") } } }) }),
    o({ tagExpression: expr }),
  );
  recordSend("send-tag-expression", res, [fcmExp(F1, mark("expr"))], [fcmExp(F2, mark("expr"))]);
});
await step("send-apple-patched", async () => {
  const res = await manage.sendNotification(createAppleNotification({ body: { aps: { alert: mark("patched") } } }), o({ tagExpression: tag("p4") }));
  recordSend("send-apple-patched", res, [apnsExp(A3, mark("patched"))], [apnsExp(A2, mark("patched"))]);
});
await step("send-removed-tag-noop", async () => {
  // p1 was removed from the patch installation: the send is accepted but must reach nobody
  const res = await manage.sendNotification(createAppleNotification({ body: { aps: { alert: mark("removed-tag") } } }), o({ tagExpression: tag("p1") }));
  recordSend("send-removed-tag-noop", res, [], [apnsExp(A2, mark("removed-tag")), apnsExp(A3, mark("removed-tag"))]);
});
await step("send-direct-apple", async () => {
  const res = await manage.sendNotification(
    createAppleNotification({ body: { aps: { alert: mark("direct") } }, headers: { "apns-priority": "5" } }),
    o({ deviceHandle: A1 }),
  );
  recordSend("send-direct-apple", res, [apnsExp(A1, mark("direct"))]);
});
await step("send-direct-browser", async () => {
  const res = await manage.sendNotification(
    createBrowserNotification({ body: { title: "direct", body: mark("direct-browser") } }),
    o({ deviceHandle: { endpoint: B1.endpoint, p256dh: B1.p256dh, auth: B1.auth } }),
  );
  recordSend("send-direct-browser", res, [webExp(B1, mark("direct-browser"))]);
});
await step("send-direct-batch", async () => {
  const res = await manage.sendNotification(createAppleNotification({ body: { aps: { alert: mark("batch") } } }), o({ deviceHandle: [A2, A3] }));
  // notificationId may be "$batch" with an Azure-style Location (§8.5); it only has to be defined
  recordSend("send-direct-batch", res, [apnsExp(A2, mark("batch")), apnsExp(A3, mark("batch"))]);
});
await step("send-test", async () => {
  const res = await manage.sendNotification(
    createAppleNotification({ body: { aps: { alert: mark("test-send") } } }),
    o({ tagExpression: tag("apns"), enableTestSend: true }),
  );
  assert.equal(res.state, "DetailedStateAvailable");
  assert.equal(typeof res.successCount, "number");
  assert.equal(typeof res.failureCount, "number");
  assert.ok(Array.isArray(res.results), "results must be an array");
  assert.equal(res.successCount, 1, "one apns installation matches the tag");
  assert.equal(res.failureCount, 0);
  assert.equal(res.results.length, 1, `results: ${JSON.stringify(res.results)}`);
  const r0 = res.results[0];
  for (const f of ["applicationPlatform", "pnsHandle", "registrationId", "outcome"]) {
    assert.equal(typeof r0[f], "string", `results[0].${f}`);
  }
  assert.equal(lc(r0.pnsHandle), lc(A0));
  // Azure's test send really delivers (to at most 10 registrations)
  sends.push({ step: "send-test", notificationId: res.notificationId ?? null, expect: [apnsExp(A0, mark("test-send"))] });
});

// =============================================================================================
// Outcomes (§4.4, §7)

await step("outcome-apple-tag", () => waitCompleted(ids.appleTag, "apnsOutcomeCounts", 1), OUTCOME_POLL_MS + 5000);
await step("outcome-fcmv1-tag", () => waitCompleted(ids.fcmTag, "fcmV1OutcomeCounts", 1), OUTCOME_POLL_MS + 5000);
await step("outcome-browser-tag", () => waitCompleted(ids.browserTag, "browserOutcomeCounts", 1), OUTCOME_POLL_MS + 5000);
await step("outcome-wns-tag", () => waitCompleted(ids.wnsTag, "wnsOutcomeCounts", 1), OUTCOME_POLL_MS + 5000);
await step("outcome-unknown-404", () => expectStatus(manage.getNotificationOutcomeDetails(`${RUN}nosuchid`, o()), 404, "outcome of an unknown id"));

// =============================================================================================
// Registrations (§4.5, Atom XML)

let appleRegId;
let appleReg;
let fcmReg;
let tplReg;
const regTplBody = JSON.stringify({ aps: { alert: "{$(greeting) + ' via registration'}" } });
const regGreeting = `regtpl-${RUN}`;

await step("reg-create-id", async () => {
  appleRegId = await manage.createRegistrationId(o());
  assert.equal(typeof appleRegId, "string");
  assert.ok(appleRegId.length > 0, "registration id must not be empty");
});
await step("reg-create-or-update-apple", async () => {
  const r = await manage.createOrUpdateRegistration(
    createAppleRegistrationDescription({ registrationId: appleRegId, deviceToken: A2, tags: [tag("r-apple"), tag("r-common")] }),
    o(),
  );
  assert.equal(r.kind, "Apple");
  assert.equal(r.registrationId, appleRegId);
  assert.equal(lc(r.deviceToken), lc(A2));
  sameSet(r.tags, [tag("r-apple"), tag("r-common")], "tags");
  assert.ok(r.etag, "etag must be returned (<ETag> element)");
});
await step("reg-create-fcmv1", async () => {
  fcmReg = await manage.createRegistration(
    createFcmV1RegistrationDescription({ fcmV1RegistrationId: F2, tags: [tag("r-fcm"), tag("r-common")] }),
    o(),
  );
  assert.equal(fcmReg.kind, "FcmV1");
  assert.equal(typeof fcmReg.registrationId, "string");
  assert.ok(fcmReg.registrationId.length > 0);
  assert.notEqual(fcmReg.registrationId, appleRegId);
  assert.equal(fcmReg.fcmV1RegistrationId, F2);
  sameSet(fcmReg.tags, [tag("r-fcm"), tag("r-common")], "tags");
  // (PushVariables are refused by tagcast with a 400: docs/operations.md.)
  assert.ok(fcmReg.etag, "etag");
});
await step("reg-create-apple-template", async () => {
  tplReg = await manage.createRegistration(
    createAppleTemplateRegistrationDescription({
      deviceToken: A3,
      bodyTemplate: regTplBody,
      templateName: "regtpl",
      apnsHeaders: { "apns-push-type": "alert" },
      tags: [tag("r-tpl")],
    }),
    o(),
  );
  assert.equal(tplReg.kind, "AppleTemplate");
  assert.equal(typeof tplReg.registrationId, "string");
  assert.equal(lc(tplReg.deviceToken), lc(A3));
  assert.equal(tplReg.bodyTemplate, regTplBody);
  assert.equal(tplReg.templateName, "regtpl");
  sameSet(tplReg.tags, [tag("r-tpl")], "tags");
});
await step("reg-get-apple", async () => {
  appleReg = await manage.getRegistration(appleRegId, o());
  assert.equal(appleReg.kind, "Apple");
  assert.equal(appleReg.registrationId, appleRegId);
  assert.equal(lc(appleReg.deviceToken), lc(A2));
  sameSet(appleReg.tags, [tag("r-apple"), tag("r-common")], "tags");
  assert.ok(appleReg.etag, "etag");
});
await step("reg-list", async () => {
  // top: 2 makes a server that pages return several pages (x-ms-continuationtoken)
  const all = await collect(manage.listRegistrations(o({ top: 2 })));
  const seen = new Set(all.map((r) => r.registrationId));
  for (const id of [appleRegId, fcmReg.registrationId, tplReg.registrationId]) {
    assert.ok(seen.has(id), `listRegistrations lacks ${id} (${all.length} listed)`);
  }
  assert.equal(seen.size, all.length, "a registration was listed twice (paging)");
});
await step("reg-list-by-tag", async () => {
  const list = await collect(manage.listRegistrationsByTag(tag("r-common"), o()));
  sameSet(list.map((r) => r.registrationId), [appleRegId, fcmReg.registrationId], "registrations with tag r-common");
  const kinds = Object.fromEntries(list.map((r) => [r.registrationId, r.kind]));
  assert.equal(kinds[appleRegId], "Apple");
  assert.equal(kinds[fcmReg.registrationId], "FcmV1");
});
await step("reg-list-by-channel", async () => {
  const list = await collect(manage.listRegistrationsByChannel({ kind: "fcmv1", fcmV1RegistrationId: F2 }, o()));
  assert.ok(list.some((r) => r.registrationId === fcmReg.registrationId), `by channel lacks ${fcmReg.registrationId}`);
  const apple = await collect(manage.listRegistrationsByChannel({ kind: "apple", deviceToken: A2 }, o()));
  assert.ok(apple.some((r) => r.registrationId === appleRegId), `by channel (apple, upper-cased by the SDK) lacks ${appleRegId}`);
});
await step("reg-update-apple", async () => {
  const updated = await manage.updateRegistration({ ...appleReg, tags: [tag("r-apple"), tag("r-common"), tag("r-updated")] }, o());
  assert.equal(updated.kind, "Apple");
  assert.equal(updated.registrationId, appleRegId);
  sameSet(updated.tags, [tag("r-apple"), tag("r-common"), tag("r-updated")], "tags after update");
  assert.ok(updated.etag, "etag");
  const again = await manage.getRegistration(appleRegId, o());
  sameSet(again.tags, [tag("r-apple"), tag("r-common"), tag("r-updated")], "tags after update (get)");
  // the old etag is stale now: a conditional update with it must fail with 412
  if (updated.etag !== appleReg.etag) {
    await expectStatus(manage.updateRegistration({ ...appleReg }, o()), 412, "update with a stale etag");
  }
});
let regSendId;
await step("reg-send-apple", async () => {
  const res = await manage.sendNotification(createAppleNotification({ body: { aps: { alert: mark("reg-apple") } } }), o({ tagExpression: tag("r-updated") }));
  regSendId = recordSend("reg-send-apple", res, [apnsExp(A2, mark("reg-apple"))]).notificationId;
});
await step("reg-send-template", async () => {
  const res = await manage.sendNotification(createTemplateNotification({ body: { greeting: regGreeting } }), o({ tagExpression: tag("r-tpl") }));
  recordSend("reg-send-template", res, [apnsExp(A3, `${regGreeting} via registration`)]);
});
// wait until the registration send is done before deleting its target
await step("reg-outcome", () => waitCompleted(regSendId, "apnsOutcomeCounts", 1), OUTCOME_POLL_MS + 5000);
// =============================================================================================
// Import/export jobs (nh-rest-api.md §4.7), on the server's jobs directory. The import creates
// the exported registrations again in the same hub: every row exists already, so it completes
// without changing anything (its Failed.txt lists them).

if (JOBS_CONTAINER !== undefined) {
  let exported;
  // The poller is a thenable: awaiting what beginSubmitNotificationHubJob resolves to polls
  // until the job is Completed (and throws its Failure if it fails).
  const poll = (job) => manage.beginSubmitNotificationHubJob(job, o({ updateIntervalInMs: 100 }));
  const checkJob = (job, type) => {
    assert.equal(job.type, type);
    assert.equal(job.status, "Completed");
    assert.equal(job.progress, 100);
    assert.equal(typeof job.jobId, "string");
    assert.ok(job.jobId.length > 0, "jobId");
    assert.equal(job.outputContainerUrl, JOBS_CONTAINER);
    assert.ok(job.createdAt instanceof Date && !Number.isNaN(job.createdAt.getTime()), "createdAt");
    assert.ok(job.updatedAt instanceof Date, "updatedAt");
    const out = job.outputProperties?.OutputFilePath;
    const failed = job.outputProperties?.FailedFilePath;
    assert.ok(typeof out === "string" && out.endsWith(`/${job.jobId}/Output.txt`), `OutputFilePath ${out}`);
    assert.ok(typeof failed === "string" && failed.endsWith(`/${job.jobId}/Failed.txt`), `FailedFilePath ${failed}`);
  };
  await step("job-export", async () => {
    exported = await poll({ type: "ExportRegistrations", outputContainerUrl: JOBS_CONTAINER });
    checkJob(exported, "ExportRegistrations");
  });
  await step("job-import", async () => {
    const job = await poll({
      type: "ImportCreateRegistrations",
      outputContainerUrl: JOBS_CONTAINER,
      importFileUrl: exported.outputProperties.OutputFilePath,
    });
    checkJob(job, "ImportCreateRegistrations");
    assert.equal(job.importFileUrl, exported.outputProperties.OutputFilePath);
  });
  await step("job-get-list", async () => {
    const job = await manage.getNotificationHubJob(exported.jobId, o());
    checkJob(job, "ExportRegistrations");
    const all = await manage.listNotificationHubJobs(o());
    const ids = all.map((j) => j.jobId);
    assert.ok(ids.includes(exported.jobId), `listNotificationHubJobs lacks ${exported.jobId}: ${ids}`);
    assert.ok(all.every((j) => j.status === "Completed"), JSON.stringify(all));
  });
  await step("job-refusals", async () => {
    await expectStatus(
      manage.submitNotificationHubJob({ type: "ExportRegistrations", outputContainerUrl: "https://acct.blob.core.windows.net/c?sig=x" }, o()),
      400,
      "a blob storage URL",
    );
    await expectStatus(
      manage.submitNotificationHubJob({ type: "ImportUpsertRegistrations", outputContainerUrl: JOBS_CONTAINER, importFileUrl: "file:///../etc/passwd" }, o()),
      400,
      "a path out of the jobs directory",
    );
    await expectStatus(listen.submitNotificationHubJob({ type: "ExportRegistrations", outputContainerUrl: JOBS_CONTAINER }, o()), 403, "a Listen key");
    await expectStatus(sendOnly.listNotificationHubJobs(o()), 403, "a Send key");
  });
}

await step("reg-delete", async () => {
  await manage.deleteRegistration(appleRegId, o());
  await manage.deleteRegistration(fcmReg.registrationId, o({ etag: fcmReg.etag }));
});
await step("reg-get-deleted-404", async () => {
  await expectStatus(manage.getRegistration(appleRegId, o()), 404, "get deleted registration");
  await expectStatus(manage.getRegistration(fcmReg.registrationId, o()), 404, "get deleted registration");
  const list = await collect(manage.listRegistrationsByTag(tag("r-common"), o()));
  assert.deepEqual(list, [], "no registration left with tag r-common");
});

// =============================================================================================
// Let the scheduled broadcast fire before the harness checks deliveries.

await step("sched-broadcast-fired", async () => {
  const wait = schedFireAt + 3000 - Date.now();
  if (wait > 0) await sleep(wait);
});

clearTimeout(watchdog);
process.stdout.write(JSON.stringify({ ok: true, run: RUN, steps: passed, sends }) + "\n");
