"""Reads criterion's estimates and rewrites the crypto table in BENCHMARKS.md.

Usage: bench_table.py CRITERION_DIR BENCHMARKS_MD
"""
import json, os, platform, re, subprocess, sys, datetime

crit, md = sys.argv[1], sys.argv[2]
rows = []
for root, _dirs, files in os.walk(crit):
    if "estimates.json" in files and os.path.basename(root) == "new":
        bench = os.path.relpath(os.path.dirname(root), crit)
        try:
            with open(os.path.join(root, "benchmark.json")) as f:
                bench = json.load(f).get("full_id", bench)
        except OSError:
            pass
        with open(os.path.join(root, "estimates.json")) as f:
            e = json.load(f)
        med = e["median"]
        rows.append((bench, med["point_estimate"], med["confidence_interval"]["lower_bound"],
                     med["confidence_interval"]["upper_bound"]))
rows.sort()

def fmt(ns):
    if ns >= 1e6:
        return f"{ns/1e6:.2f} ms"
    return f"{ns/1000:.1f} µs" if ns >= 1000 else f"{ns:.0f} ns"

cpu = "unknown CPU"
try:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
except OSError:
    pass
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
lines = [
    "<!-- crypto-bench:start -->",
    f"Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}; {rustc}.",
    f"Measured {datetime.date.today().isoformat()} with `scripts/bench-crypto.sh` (criterion, release profile, median and 95% interval).",
    "",
    "| benchmark | median | 95% interval |",
    "|---|---|---|",
]
for bench, med, lo, hi in rows:
    lines.append(f"| `{bench}` | {fmt(med)} | {fmt(lo)} – {fmt(hi)} |")
lines.append("<!-- crypto-bench:end -->")
table = "\n".join(lines)
text = open(md).read() if os.path.exists(md) else ""
pattern = re.compile(r"<!-- crypto-bench:start -->.*?<!-- crypto-bench:end -->", re.S)
text = pattern.sub(lambda _m: table, text) if pattern.search(text) else text + "\n" + table + "\n"
open(md, "w").write(text)
print(table)
