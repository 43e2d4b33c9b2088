// Drives the dashboard in headless Chromium (Debian's, through playwright-core) for
// tests/tests/dashboard.rs, which starts the network and upgrades it between phases.
//
//   node dashboard.mjs
//
// Environment: DASHBOARD_URL, SCREENSHOT (where to write the PNG), PLAYWRIGHT_CORE (the
// playwright-core package directory), CHROMIUM (default /usr/bin/chromium), NODES (how
// many node rows to expect), OLD and NEW (the versions), STOPPED_NODE (the id of the node
// the test stops last), PHASE_TIMEOUT_MS (default 240000).
//
// It loads the page once and never reloads it. Each phase is announced on stdout as one
// line once the page shows it:
//   phase old-version-shown    every node row's running version is OLD
//   phase new-version-shown    every node row's running version is NEW
//   phase rollout-complete     the rollout of NEW shows every node switched and healthy
//   phase unreachable-shown    STOPPED_NODE's row says unreachable and since when
//   screenshot PATH
// A phase not reached in time prints the node rows to stderr, writes the screenshot and
// exits 1.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    console.error(`dashboard.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
};
const url = env("DASHBOARD_URL");
const screenshot = env("SCREENSHOT");
const nodes = Number(env("NODES", "4"));
const [oldVersion, newVersion] = [env("OLD"), env("NEW")];
const stopped = env("STOPPED_NODE");
const timeoutMs = Number(env("PHASE_TIMEOUT_MS", "240000"));
const require = createRequire(import.meta.url);
const { chromium } = require(env("PLAYWRIGHT_CORE"));

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  // Tests run as root, where Chromium's sandbox cannot start; no GPU, and nothing of
  // Chromium's own reaching out (the test machine's network is closed).
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
let navigations = 0;
page.on("framenavigated", (f) => {
  if (f === page.mainFrame()) navigations += 1;
});
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));

// The node rows' running versions, reachability and the rollout's cells, as shown.
const rows = () =>
  page.evaluate(() => {
    const field = (id, f) => {
      const e = document.querySelector(`td[data-node="${id}"][data-field="${f}"]`);
      return e ? e.textContent : null;
    };
    const ids = [...document.querySelectorAll("#nodes tbody tr[data-node]")].map((tr) => tr.getAttribute("data-node"));
    const rollout = document.querySelector("#rollout-table");
    return {
      refresh: document.body.getAttribute("data-refresh"),
      rollout_version: rollout ? rollout.getAttribute("data-rollout-version") : null,
      nodes: ids.map((id) => ({
        id,
        running_version: field(id, "running_version"),
        reachability: field(id, "reachability"),
        steps: Object.fromEntries(
          [...document.querySelectorAll(`#rollout-table td[data-node="${id}"][data-step]`)].map((td) => [
            td.getAttribute("data-step"),
            td.textContent,
          ]),
        ),
      })),
    };
  });

async function shoot() {
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot ${screenshot}`);
}

async function phase(name, holds) {
  const start = Date.now();
  let seen;
  for (;;) {
    seen = await rows();
    if (seen.nodes.length === nodes && holds(seen)) break;
    if (Date.now() - start > timeoutMs) {
      console.error(`dashboard.mjs: ${name}: not shown within ${timeoutMs} ms; the page shows ${JSON.stringify(seen)}`);
      await shoot();
      await browser.close();
      process.exit(1);
    }
    await page.waitForTimeout(250);
  }
  console.log(`phase ${name} after ${Date.now() - start} ms, refresh ${seen.refresh}`);
}

await page.goto(url);
await phase("old-version-shown", (s) => s.nodes.every((n) => n.running_version === oldVersion));
// Marks this document: a reload would lose it.
await page.evaluate(() => { window.__loadedOnce = true; });
await phase("new-version-shown", (s) => s.nodes.every((n) => n.running_version === newVersion));
const seenAt = (t) => t !== undefined && t !== "·";
await phase(
  "rollout-complete",
  (s) => s.rollout_version === newVersion && s.nodes.every((n) => seenAt(n.steps.switched) && seenAt(n.steps.healthy)),
);
await phase("unreachable-shown", (s) =>
  s.nodes.some((n) => n.id === stopped && /^unreachable since \d\d:\d\d:\d\d/.test(n.reachability ?? "")),
);
const same = await page.evaluate(() => window.__loadedOnce === true);
if (!same || navigations !== 1) {
  console.error(`dashboard.mjs: the page was reloaded (navigations: ${navigations}, marker kept: ${same})`);
  process.exit(1);
}
if (pageErrors.length) {
  console.error(`dashboard.mjs: the page's script failed: ${pageErrors.join("; ")}`);
  process.exit(1);
}
// The registry's panel says it is reachable and checked.
const registry = await page.textContent("#registry-status");
if (registry !== "reachable") {
  console.error(`dashboard.mjs: the registry shows as ${registry}`);
  process.exit(1);
}
await shoot();
await browser.close();
