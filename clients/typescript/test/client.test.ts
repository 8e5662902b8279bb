// The TypeScript client against a real `python -m api` process and the service's own webhook
// deliveries (run by tests/test_client_typescript.py, which starts them and passes their
// addresses in the environment): docs/contract.md §10.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { EntitledClient, WebhookError, verifyWebhook } from "../src/index.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these through tests/test_client_typescript.py`);
  return value;
};
const API_URL = env("ENTITLED_API_URL");
const TOKEN = env("ENTITLED_API_TOKEN");
const CONTROL_URL = env("ENTITLED_CONTROL_URL");
const HOOK_PORT = Number(env("ENTITLED_HOOK_PORT"));
const HOOK_SECRET = env("ENTITLED_HOOK_SECRET");
const FOREVER = 4_000_000_000;

const client = new EntitledClient({ baseUrl: API_URL, token: TOKEN, whenUnreachable: "deny",
                                    webhookSecret: HOOK_SECRET, maxAgeMs: 3_600_000 });
const server = createServer(client.webhookListener());

before(async () => {
  await new Promise<void>((resolve) => server.listen(HOOK_PORT, "127.0.0.1", resolve));
});
after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function setAccess(customerId: string, userId: string, features: Record<string, number>): Promise<void> {
  const resp = await fetch(`${CONTROL_URL}/access`, {
    method: "POST", body: JSON.stringify({ customer_id: customerId, user_id: userId, features }),
  });
  assert.equal(resp.status, 200, await resp.text());
}

async function until(predicate: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("checks answer from memory once fetched; an unknown user is denied", async () => {
  await setAccess("cus_ts1", "u_ts1", { pro: FOREVER });
  assert.equal(client.cached("u_ts1", "pro"), undefined);
  assert.equal(await client.check("u_ts1", "pro"), true);
  assert.equal(await client.check("u_ts1", "export"), false);
  assert.equal(client.cached("u_ts1", "pro"), true);
  assert.equal(await client.check("nobody", "pro"), false);
  assert.equal(client.cached("nobody", "pro"), false);
});

test("the outbound webhooks keep the cache current", async () => {
  await setAccess("cus_ts2", "u_ts2", { pro: FOREVER });
  assert.equal(await client.check("u_ts2", "pro"), true);
  await setAccess("cus_ts2", "u_ts2", { export: FOREVER });
  // delivered by the service's Deliverer to this process' listener, verified, applied, refetched
  await until(() => client.cached("u_ts2", "export") === true, "the webhook and the refetch");
  assert.equal(await client.check("u_ts2", "pro"), false);
});

test("valid_until ends an entry", async () => {
  await setAccess("cus_ts3", "u_ts3", { pro: Math.floor(Date.now() / 1000) + 2, base: FOREVER });
  assert.equal(await client.check("u_ts3", "pro"), true);
  await until(() => client.cached("u_ts3", "pro") === undefined, "the end of the entry", 5_000);
  assert.equal(await client.check("u_ts3", "pro"), false);
  assert.equal(await client.check("u_ts3", "base"), true);
});

test("the API down: allowed or denied as the client was built to, cached users unaffected", async () => {
  const closed = "http://127.0.0.1:9";
  const deny = new EntitledClient({ baseUrl: closed, token: TOKEN, whenUnreachable: "deny", timeoutMs: 500 });
  const allow = new EntitledClient({ baseUrl: closed, token: TOKEN, whenUnreachable: "allow", timeoutMs: 500 });
  assert.equal(await deny.check("u_x", "pro"), false);
  assert.equal(await allow.check("u_x", "pro"), true);
  assert.equal(allow.cached("u_x", "pro"), undefined);
  assert.throws(() => new EntitledClient({ baseUrl: closed, token: TOKEN, whenUnreachable: "maybe" as "deny" }));
});

test("forged, stale or replayed webhooks change nothing", async () => {
  await setAccess("cus_ts4", "u_ts4", { pro: FOREVER });
  assert.equal(await client.check("u_ts4", "pro"), true);
  const body = JSON.stringify({ id: "m-ts4", customer_id: "cus_ts4", user_id: "u_ts4", features: [],
                                version: 99 });
  const now = Math.floor(Date.now() / 1000);
  const key = Buffer.from(HOOK_SECRET.slice("whsec_".length), "base64");
  const sign = (id: string, ts: number, b: string) =>
    `v1,${createHmac("sha256", key).update(`${id}.${ts}.${b}`).digest("base64")}`;
  const good = { "webhook-id": "m-ts4", "webhook-timestamp": String(now), "webhook-signature": sign("m-ts4", now, body) };
  for (const bad of [
    { ...good, "webhook-signature": "v1,AAAA" },
    { ...good, "webhook-timestamp": String(now - 3600), "webhook-signature": sign("m-ts4", now - 3600, body) },
    { "webhook-timestamp": good["webhook-timestamp"], "webhook-signature": good["webhook-signature"] },
  ]) {
    assert.throws(() => client.handleWebhook(bad, body), WebhookError);
    assert.equal(client.cached("u_ts4", "pro"), true);
  }
  assert.throws(() => verifyWebhook(HOOK_SECRET, good, body.replace("99", "100")), WebhookError);
  const resp = await fetch(`http://127.0.0.1:${HOOK_PORT}/hooks`, { method: "POST", headers: { ...good, "webhook-signature": "v1,AAAA" }, body });
  assert.equal(resp.status, 400);
  assert.equal(client.cached("u_ts4", "pro"), true);
  assert.deepEqual([...client.handleWebhook(good, body)], ["u_ts4"]);
  const skipped = client.skipped;
  client.handleWebhook(good, body);
  assert.equal(client.skipped, skipped + 1);
});
