"""The image test's second half (deploy/image-test.sh does the first: Docker, the base image).

Runs the stack of `compose.yaml` with `docker run --network host` (no Compose on these machines,
and dockerd runs with `--bridge=none`): each service from the file, in its `depends_on` order,
with its image, command, environment, `env_file`, named volumes and healthcheck; the conditions
`service_healthy` and `service_completed_successfully` are waited for. Host networking means
every process needs a port of its own, so the test overrides the ports (and only they, plus the
Stripe settings) in the environment. Postgres and Redis images cannot be pulled here (no
registry): stand-ins built from the same Debian base take their place (deploy/test-infra/).

Then: the fake Stripe runs on the host, a purchase there sends signed webhooks to the
containerised ingest, and the test waits for the `access-changed` message on the stream of the
containerised Redis, and for the API to answer the user's features. Everything it created goes
in the end (`--keep` leaves the stack up for a look).

    .venv/bin/python deploy/image_test.py --base entitled-test-base:bookworm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import stripe
import yaml

from fakestripe import FakeStripe

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "entitled-test"
API_KEY = "sk_test_image"
WEBHOOK_SECRET = "whsec_imagetest0000000000000000000"
API_TOKEN = "imagetest:tok_imagetest_0123456789"
INFRA_IMAGE = "entitled-test-infra:latest"
APP_IMAGE = "entitled:image-test"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def say(msg: str) -> None:
    print(f"[image-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def docker(*args: str, check: bool = True, capture: bool = False) -> str:
    done = subprocess.run(["docker", *args], check=False, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {shlex.join(args[:3])} ... failed ({done.returncode}): {(done.stderr or '')[-2000:]}")
    return (done.stdout or "").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${VAR}` and `${VAR:-default}`, recursively."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, val = line.partition("=")
            values[key.strip()] = val.strip()
    return values


def as_dict(value: Any) -> dict[str, str]:
    """`environment:` as a mapping or as a list of KEY=VALUE."""
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)
    return {}


def start_order(services: Mapping[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"depends_on cycle through {name}")
        for dep in services[name].get("depends_on") or {}:
            visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def seconds(value: str) -> str:
    return str(value) if str(value)[-1:].isalpha() else f"{value}s"


@dataclass
class Stack:
    """The services of one compose file, run with `docker run --network host`."""

    services: dict[str, Any]
    env_file: dict[str, str]
    overrides: dict[str, dict[str, str]]
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def run(self, name: str) -> None:
        svc = self.services[name]
        env = {**self.env_file} if svc.get("env_file") else {}
        env.update(as_dict(svc.get("environment")))
        env.update(self.overrides.get(name, {}))
        container = f"{PROJECT}-{name}"
        args = ["run", "-d", "--name", container, "--network", "host", "--label", f"{PROJECT}=1"]
        if svc.get("user"):
            args += ["--user", str(svc["user"])]
        for key, val in env.items():
            args += ["-e", f"{key}={val}"]
        for mount in svc.get("volumes") or []:
            source, _, target = str(mount).partition(":")
            if not source.startswith(("/", ".")):
                source = f"{PROJECT}_{source}"
                if source not in self.volumes:
                    docker("volume", "create", "--label", f"{PROJECT}=1", source, capture=True)
                    self.volumes.append(source)
            args += ["-v", f"{source}:{target}"]
        check = svc.get("healthcheck")
        if check:
            test = check["test"]
            cmd = shlex.join(test[1:]) if test[0] == "CMD" else test[1]
            args += ["--health-cmd", cmd, "--health-interval", seconds(check.get("interval", "5s")),
                     "--health-timeout", seconds(check.get("timeout", "3s")),
                     "--health-retries", str(check.get("retries", 3))]
        args.append(svc["image"])
        command = svc.get("command") or []
        args += [str(c) for c in (command if isinstance(command, list) else shlex.split(command))]
        docker(*args, capture=True)
        self.containers.append(container)
        say(f"started {name} ({svc['image']} {' '.join(map(str, command))})")

    def wait_for(self, name: str, condition: str, timeout_s: float = 120.0) -> None:
        container = f"{PROJECT}-{name}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = json.loads(docker("inspect", "-f", "{{json .State}}", container, capture=True))
            if condition == "service_completed_successfully" and state["Status"] == "exited":
                if state["ExitCode"] != 0:
                    raise RuntimeError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
                return
            if condition == "service_healthy" and (state.get("Health") or {}).get("Status") == "healthy":
                return
            if condition == "service_started" and state["Status"] == "running":
                return
            if state["Status"] == "exited" and condition != "service_completed_successfully":
                raise RuntimeError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
            time.sleep(0.5)
        raise RuntimeError(f"{name}: not {condition} after {timeout_s:g}s:\n{self.logs(name)}")

    def up(self) -> None:
        for name in start_order(self.services):
            for dep, cond in (self.services[name].get("depends_on") or {}).items():
                self.wait_for(dep, (cond or {}).get("condition", "service_started"))
            self.run(name)

    def logs(self, name: str) -> str:
        done = subprocess.run(["docker", "logs", "--tail", "40", f"{PROJECT}-{name}"],
                              capture_output=True, text=True, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def down(self) -> None:
        for container in reversed(self.containers):
            docker("rm", "-f", "-v", container, check=False, capture=True)
        for volume in self.volumes:
            docker("volume", "rm", "-f", volume, check=False, capture=True)


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if get(url)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered 200")
        time.sleep(0.5)


def build(services: Mapping[str, Any], base: str) -> None:
    """Build each image the file builds, once, on the host network (the builder has no other)."""
    done: set[str] = set()
    for svc in services.values():
        spec = svc.get("build")
        if not spec or svc["image"] in done:
            continue
        context = ROOT / str(spec.get("context", "."))
        build_args = {**(spec.get("args") or {}), "BASE": base}
        args = ["build", "--network", "host", "-t", svc["image"]]
        for key, val in build_args.items():
            args += ["--build-arg", f"{key}={val}"]
        started = time.monotonic()
        say(f"building {svc['image']} from {base}")
        docker(*args, str(context))
        say(f"built {svc['image']} in {time.monotonic() - started:.0f}s")
        done.add(svc["image"])


@dataclass(frozen=True)
class Ports:
    postgres: int = field(default_factory=free_port)
    redis: int = field(default_factory=free_port)
    web: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    worker_1: int = field(default_factory=free_port)
    worker_2: int = field(default_factory=free_port)


def host_network_overrides(services: dict[str, Any], ports: Ports, stripe_base: str) -> dict[str, dict[str, str]]:
    """What host networking changes: the stand-ins for postgres and redis, and every port."""
    pg = services["postgres"]
    pg.update(image=INFRA_IMAGE, user="postgres", command=["postgres-standin"])
    pg["healthcheck"]["test"] = ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(ports.postgres),
                                 "-U", "entitled", "-d", "entitled"]
    rd = services["redis"]
    # the file's own command (appendonly yes) plus a port and a data dir of its own
    rd.update(image=INFRA_IMAGE, user="redis",
              command=[*rd["command"], "--port", str(ports.redis), "--bind", "127.0.0.1", "--dir", "/data"])
    rd["healthcheck"]["test"] = ["CMD", "redis-cli", "-p", str(ports.redis), "ping"]
    common = {
        "DATABASE_URL": f"postgresql://entitled:entitled@127.0.0.1:{ports.postgres}/entitled",
        "REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
        "STRIPE_API_BASE": stripe_base,
        "STRIPE_RATE_LIMIT": "100",
    }
    return {
        "postgres": {"PGPORT": str(ports.postgres), "LISTEN_ADDRESSES": "127.0.0.1"},
        "migrate": common,
        "web": {**common, "PORT": str(ports.web)},
        "api": {**common, "API_PORT": str(ports.api)},
        "worker-1": {**common, "WORKER_METRICS_PORT": str(ports.worker_1), "METRICS_HOST": "127.0.0.1"},
        "worker-2": {**common, "WORKER_METRICS_PORT": str(ports.worker_2), "METRICS_HOST": "127.0.0.1"},
    }


def env_for_test() -> dict[str, str]:
    """.env.example with the test's secrets: the file an operator would write."""
    values = read_env_file(ROOT / ".env.example")
    values.update(STRIPE_API_KEY=API_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, API_TOKENS=API_TOKEN,
                  COALESCE_WINDOW="0.2s", LOG_LEVEL="INFO")
    return values


def purchase(base_url: str) -> str:
    """A customer subscribes to a product with the feature `pro`; the fake sends the webhooks."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": base_url})
    feature = client.v1.entitlements.features.create({"name": "Pro", "lookup_key": "pro"})
    product = client.v1.products.create({"name": "Pro"})
    client.v1.products.features.create(product.id, {"entitlement_feature": feature.id})
    price = client.v1.prices.create(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}})
    customer = client.v1.customers.create(
        {"metadata": {"user_id": "u_image_test"}, "payment_method": "pm_card_visa",
         "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    return customer.id


def await_message(redis_port: int, customer_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
    r = redis.Redis(host="127.0.0.1", port=redis_port)
    deadline = time.monotonic() + timeout_s
    last = "0"
    try:
        while time.monotonic() < deadline:
            for _stream, entries in r.xread({"access-changed": last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    message: dict[str, Any] = json.loads(fields[b"data"])
                    if message["customer_id"] == customer_id and "pro" in message["features"]:
                        return message
        raise RuntimeError(f"no access-changed message for {customer_id} within {timeout_s:g}s")
    finally:
        r.close()


@contextlib.contextmanager
def fake_stripe(web_port: int) -> Iterator[str]:
    fake = FakeStripe(api_keys=(API_KEY,), tick_interval_s=0.2)
    fake.add_webhook_endpoint(f"http://127.0.0.1:{web_port}/webhooks/stripe", secret=WEBHOOK_SECRET)
    handle = fake.start_in_thread()
    try:
        yield handle.base_url
    finally:
        handle.stop()


def check(stack: Stack, ports: Ports, stripe_base: str) -> None:
    for name in ("web", "api", "worker-1", "worker-2"):
        stack.wait_for(name, "service_healthy", timeout_s=90)
    say("HEALTHCHECK: web, api, worker-1, worker-2 healthy")
    for name, port in (("web", ports.web), ("api", ports.api), ("worker-1", ports.worker_1),
                       ("worker-2", ports.worker_2)):
        status, _ = get(f"http://127.0.0.1:{port}/healthz")
        say(f"GET {name} /healthz -> {status}")
        if status != 200:
            raise RuntimeError(f"{name} /healthz answered {status}")
    started = time.monotonic()
    customer_id = purchase(stripe_base)
    message = await_message(ports.redis, customer_id)
    say(f"access-changed on the stream {time.monotonic() - started:.1f}s after the purchase: "
        f"{ {k: message[k] for k in ('customer_id', 'user_id', 'features', 'reason', 'version')} }")
    status, body = get(f"http://127.0.0.1:{ports.api}/v1/access?user_id=u_image_test",
                       token=API_TOKEN.partition(":")[2])
    say(f"GET api /v1/access?user_id=u_image_test -> {status} {body.decode()[:200]}")
    if status != 200 or b'"pro"' not in body:
        raise RuntimeError("the API does not grant the feature")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the BASE image to build on")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    ports = Ports()
    interp = {**os.environ, "ENTITLED_IMAGE": APP_IMAGE, "BASE": args.base}
    services: dict[str, Any] = interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()), interp)["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    say(f"compose.yaml: {len(services)} services, published ports {published}")
    build(services, args.base)
    docker("build", "--network", "host", "-t", INFRA_IMAGE, "--build-arg", f"BASE={args.base}",
           "-f", str(ROOT / "deploy/test-infra/Dockerfile"), str(ROOT / "deploy/test-infra"), capture=True)
    say(f"built {INFRA_IMAGE} (Postgres and Redis from Debian, standing in for postgres:16 and redis:7)")
    with fake_stripe(ports.web) as stripe_base:
        stack = Stack(services, env_for_test(), host_network_overrides(services, ports, stripe_base))
        try:
            stack.up()
            check(stack, ports, stripe_base)
            say("PASS")
            return 0
        except Exception:
            for name in stack.services:
                if f"{PROJECT}-{name}" in stack.containers:
                    print(f"--- {name} ---\n{stack.logs(name)}", file=sys.stderr)
            raise
        finally:
            if not args.keep:
                stack.down()
                docker("rmi", "-f", APP_IMAGE, INFRA_IMAGE, check=False, capture=True)
                say("removed the containers, volumes and images it made")


if __name__ == "__main__":
    raise SystemExit(main())
