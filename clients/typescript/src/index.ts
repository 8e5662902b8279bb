// A client of entitled's app-facing API (docs/contract.md §10) with an in-memory access cache,
// kept current by the outbound webhooks (Standard Webhooks). No runtime dependencies: Node 20's
// fetch and node:crypto.
//
// - `await client.check(user, feature)` answers from memory while the user's entry lives,
//   otherwise fetches `GET /v1/access` once (concurrent misses share the fetch).
// - An entry lives until the earliest `valid_until` among its grants and limits, at most `maxAgeMs`.
// - `handleWebhook(headers, body)` verifies a webhook and drops the entries its message makes
//   stale (repeated ids, and versions an entry already reflects, change nothing).
// - `whenUnreachable` has no default: "allow" or "deny" when the API cannot answer.

import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

export type Unreachable = "allow" | "deny";

export interface ClientOptions {
  baseUrl: string;
  token: string;
  whenUnreachable: Unreachable;
  webhookSecret?: string;
  maxAgeMs?: number;
  timeoutMs?: number;
  refreshOnChange?: boolean;
}

export interface AccessChanged {
  id: string;
  customer_id: string;
  user_id: string | null;
  version: number;
  features: string[];
  [key: string]: unknown;
}

export interface Entry {
  userId: string;
  features: ReadonlySet<string>;
  quantities: ReadonlyMap<string, number>;
  limits: Readonly<Record<string, number>>;
  versions: Readonly<Record<string, number>>;
  expiresAt: number; // performance.now() milliseconds
}

export class ApiUnavailableError extends Error {}
export class ClientError extends Error {}
export class WebhookError extends Error {}

const REMEMBER_IDS = 10_000;
const TOLERANCE_S = 300;
const FETCH_ATTEMPTS = 3;

interface AccessBody {
  user_id?: string | null;
  features?: string[];
  grants?: { feature: string; quantity: number; valid_until: string | null }[];
  limit_grants?: { valid_until: string | null }[];
  limits?: Record<string, number>;
  versions?: Record<string, number>;
}

export function entryFromAccess(userId: string, body: AccessBody | null, maxAgeMs: number,
                                now: number = performance.now(), wallNow: number = Date.now()): Entry {
  let expiresAt = now + maxAgeMs;
  const quantities = new Map<string, number>();
  const until = (value: string | null | undefined): void => {
    if (value != null) expiresAt = Math.min(expiresAt, now + (Date.parse(value) - wallNow));
  };
  for (const g of body?.grants ?? []) {
    quantities.set(g.feature, (quantities.get(g.feature) ?? 0) + Number(g.quantity));
    until(g.valid_until);
  }
  for (const l of body?.limit_grants ?? []) until(l.valid_until);
  return {
    userId,
    features: new Set(body?.features ?? []),
    quantities,
    limits: { ...(body?.limits ?? {}) },
    versions: { ...(body?.versions ?? {}) },
    expiresAt,
  };
}

/** Verify a Standard Webhooks request; its access-changed message, or a WebhookError. */
export function verifyWebhook(secret: string, headers: Record<string, string | string[] | undefined>,
                              body: string | Buffer, nowMs: number = Date.now()): AccessChanged {
  if (!secret.startsWith("whsec_")) throw new Error("an endpoint secret starts with whsec_");
  const header = (name: string): string => {
    for (const [key, value] of Object.entries(headers)) {
      if (key.toLowerCase() === name && value !== undefined) return Array.isArray(value) ? value[0] : value;
    }
    throw new WebhookError(`missing ${name} header`);
  };
  const id = header("webhook-id");
  const stamp = header("webhook-timestamp");
  const sent = Number(stamp);
  if (!/^\d+$/.test(stamp) || Math.abs(nowMs / 1000 - sent) > TOLERANCE_S) {
    throw new WebhookError("webhook-timestamp is missing or too far from now");
  }
  const raw = typeof body === "string" ? Buffer.from(body) : body;
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${sent}.`).update(raw).digest();
  const matches = header("webhook-signature").split(" ").some((part) => {
    const [version, sig] = part.split(",", 2);
    if (version !== "v1" || sig === undefined) return false;
    const offered = Buffer.from(sig, "base64");
    return offered.length === expected.length && timingSafeEqual(offered, expected);
  });
  if (!matches) throw new WebhookError("no signature matches");
  let message: unknown;
  try {
    message = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new WebhookError("the body is not JSON");
  }
  const m = message as AccessChanged;
  if (typeof m !== "object" || m === null || typeof m.customer_id !== "string" || typeof m.version !== "number") {
    throw new WebhookError("the body is not an access-changed message");
  }
  return m;
}

export class EntitledClient {
  readonly entries = new Map<string, Entry>();
  private readonly usersOf = new Map<string, Set<string>>();
  // users being fetched -> whether a message about them arrived meanwhile (then not kept)
  private readonly fetching = new Map<string, boolean>();
  private readonly inflight = new Map<string, Promise<Entry>>();
  private readonly seen = new Set<string>();
  private readonly allowWhenUnreachable: boolean;
  private readonly baseUrl: string;
  private readonly maxAgeMs: number;
  private readonly timeoutMs: number;
  private readonly refreshOnChange: boolean;
  skipped = 0;

  constructor(private readonly options: ClientOptions) {
    if (options.whenUnreachable !== "allow" && options.whenUnreachable !== "deny") {
      throw new Error('whenUnreachable must be "allow" or "deny"');
    }
    this.allowWhenUnreachable = options.whenUnreachable === "allow";
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.maxAgeMs = options.maxAgeMs ?? 300_000;
    this.timeoutMs = options.timeoutMs ?? 2_000;
    this.refreshOnChange = options.refreshOnChange ?? true;
  }

  /** From memory only: true/false while the user's entry lives, undefined when it must be fetched. */
  cached(userId: string, feature: string): boolean | undefined {
    const entry = this.entries.get(userId);
    if (entry === undefined || performance.now() >= entry.expiresAt) return undefined;
    return entry.features.has(feature);
  }

  async check(userId: string, feature: string): Promise<boolean> {
    const hit = this.cached(userId, feature);
    if (hit !== undefined) return hit;
    try {
      return (await this.entry(userId)).features.has(feature);
    } catch (err) {
      if (err instanceof ApiUnavailableError) return this.allowWhenUnreachable;
      throw err;
    }
  }

  /** The user's entry, fetched when missing or expired (ApiUnavailableError if it cannot be). */
  entry(userId: string): Promise<Entry> {
    const entry = this.entries.get(userId);
    if (entry !== undefined && performance.now() < entry.expiresAt) return Promise.resolve(entry);
    let pending = this.inflight.get(userId);
    if (pending === undefined) {
      pending = this.fetch(userId).finally(() => this.inflight.delete(userId));
      this.inflight.set(userId, pending);
    }
    return pending;
  }

  private async fetch(userId: string): Promise<Entry> {
    let entry: Entry | undefined;
    // A message about the user during the request makes its answer suspect: ask again.
    for (let attempt = 0; attempt < FETCH_ATTEMPTS; attempt++) {
      this.fetching.set(userId, false);
      let status: number;
      let body: unknown;
      try {
        [status, body] = await this.request("GET", `/v1/access?user_id=${encodeURIComponent(userId)}`);
      } catch (err) {
        this.fetching.delete(userId);
        throw err;
      }
      if (status !== 200 && status !== 404) {
        this.fetching.delete(userId);
        throw new ClientError(`GET /v1/access answered ${status}: ${JSON.stringify(body)}`);
      }
      entry = entryFromAccess(userId, status === 200 ? (body as AccessBody) : null, this.maxAgeMs);
      const overtaken = this.fetching.get(userId) === true;
      this.fetching.delete(userId);
      if (!overtaken) {
        this.store(entry);
        break;
      }
    }
    return entry as Entry;
  }

  /** POST /v1/sync (the Checkout success page): the fresh access, cached; null on 202. */
  async sync(target: { checkoutSessionId: string } | { customerId: string }): Promise<AccessBody | null> {
    const payload = "checkoutSessionId" in target
      ? { checkout_session_id: target.checkoutSessionId } : { customer_id: target.customerId };
    const [status, body] = await this.request("POST", "/v1/sync", payload);
    if (status === 202) return null;
    if (status !== 200) throw new ClientError(`POST /v1/sync answered ${status}: ${JSON.stringify(body)}`);
    const access = body as AccessBody;
    if (access.user_id) this.store(entryFromAccess(access.user_id, access, this.maxAgeMs));
    return access;
  }

  private async request(method: string, path: string, payload?: unknown): Promise<[number, unknown]> {
    let resp: Response;
    let text: string;
    try {
      resp = await fetch(this.baseUrl + path, {
        method,
        redirect: "manual",
        signal: AbortSignal.timeout(this.timeoutMs),
        headers: { Authorization: `Bearer ${this.options.token}`,
                   ...(payload === undefined ? {} : { "Content-Type": "application/json" }) },
        body: payload === undefined ? undefined : JSON.stringify(payload),
      });
      text = await resp.text();
    } catch (err) {
      throw new ApiUnavailableError(`${method} ${path}: ${(err as Error).name}`);
    }
    if (resp.status >= 500 || resp.status === 429) {
      throw new ApiUnavailableError(`${method} ${path} answered ${resp.status}`);
    }
    try {
      return [resp.status, JSON.parse(text)];
    } catch {
      throw new ApiUnavailableError(`${method} ${path} answered ${resp.status} without JSON`);
    }
  }

  private store(entry: Entry): void {
    this.drop(entry.userId);
    this.entries.set(entry.userId, entry);
    for (const customerId of Object.keys(entry.versions)) {
      let users = this.usersOf.get(customerId);
      if (users === undefined) this.usersOf.set(customerId, (users = new Set()));
      users.add(entry.userId);
    }
  }

  private drop(userId: string): void {
    const entry = this.entries.get(userId);
    if (entry === undefined) return;
    this.entries.delete(userId);
    for (const customerId of Object.keys(entry.versions)) {
      const users = this.usersOf.get(customerId);
      users?.delete(userId);
      if (users?.size === 0) this.usersOf.delete(customerId);
    }
  }

  /** Apply one access-changed message; the users whose entries were dropped. */
  apply(message: AccessChanged): Set<string> {
    const stale = new Set<string>();
    if (this.seen.has(message.id)) {
      this.skipped++;
      return stale;
    }
    this.seen.add(message.id);
    if (this.seen.size > REMEMBER_IDS) this.seen.delete(this.seen.values().next().value as string);
    const users = new Set(this.usersOf.get(message.customer_id) ?? []);
    if (message.user_id) users.add(message.user_id);
    for (const userId of users) {
      const entry = this.entries.get(userId);
      if (entry !== undefined && (entry.versions[message.customer_id] ?? -1) >= message.version) continue;
      if (this.fetching.has(userId)) this.fetching.set(userId, true);
      if (entry !== undefined) {
        this.drop(userId);
        stale.add(userId);
      }
    }
    if (this.refreshOnChange) for (const userId of stale) this.entry(userId).catch(() => undefined);
    return stale;
  }

  /** Verify one webhook under `webhookSecret` and apply it (WebhookError when not genuine). */
  handleWebhook(headers: Record<string, string | string[] | undefined>, body: string | Buffer): Set<string> {
    if (this.options.webhookSecret === undefined) throw new Error("give webhookSecret to handle webhooks");
    return this.apply(verifyWebhook(this.options.webhookSecret, headers, body));
  }

  /** A node:http request listener for the endpoint: 204 when applied, 400 when not genuine. */
  webhookListener(): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        try {
          this.handleWebhook(req.headers, Buffer.concat(chunks));
          res.writeHead(204).end();
        } catch (err) {
          const status = err instanceof WebhookError ? 400 : 500;
          res.writeHead(status, { "Content-Type": "application/json" })
            .end(JSON.stringify({ error: (err as Error).message }));
        }
      });
    };
  }
}
