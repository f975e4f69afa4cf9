"""Run every benchmark, one after another, and keep what they printed with the machine's
description and the date: the one command behind ``benchmarks/RESULTS.md``.

Each script runs in its own process with this interpreter (they start their own Redis
servers and services); their output is shown as it comes and written to ``--out``. A script
that fails is reported and the others still run; the exit status is 1 if any failed.

Usage (from the repository root): python -m benchmarks.run_all [--quick] [--soak] [--only NAME,...]
[--out FILE]

``--quick`` shortens every script (seconds per measurement, sizes) to check that the suite
runs (about 10 minutes); the default is the full run (about 25 minutes on 2 cores), and
``--soak`` adds the 10-minute soak. Run it on a machine with nothing else running.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Script -> (arguments of the full run, arguments of a quick run).
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "bench_kernels.py": ([], []),
    "bench_tokens.py": ([], []),
    "bench_simulations.py": ([], ["--skip-large", "--repeats", "1"]),
    "bench_advisor.py": ([], []),
    "bench_dask.py": ([], ["--repeats", "1"]),
    "bench_http.py": (["--seconds", "5"], ["--seconds", "1"]),
    "bench_layers.py": ([], ["--seconds", "1", "--rounds", "1"]),
    "bench_freshness.py": (["--trials", "50"], ["--trials", "5"]),
    "bench_memory.py": ([], ["--experiments", "200", "--arm-experiments", "20", "--events",
                             "3000", "--units", "2000", "--provisional", "2000",
                             "--samples", "20"]),
    "bench_cluster.py": (["--seconds", "5"], ["--seconds", "1"]),
    "bench_stream.py": ([], ["--events", "20000", "--seconds", "3"]),
    "bench_loop.py": ([], ["--repeat", "2"]),
    "bench_scale.py": ([], ["--sizes", "100,10000", "--idle", "3", "--settle", "3"]),
    "bench_contextual.py": (["--seconds", "5"], ["--seconds", "1"]),
    "bench_ope.py": ([], ["--rows", "100000", "--repeats", "1"]),
}
SOAK = ("bench_soak.py", ["--duration", "630"])
PACKAGES = ("numpy", "numba", "scipy", "aiohttp", "redis", "hiredis", "orjson", "distributed",
            "bandit-service")


def describe_machine() -> str:
    """CPU, cores, memory, kernel, Python and package versions, Redis, load: what a result
    needs beside it to mean anything."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 2**20:.0f} GiB RAM"
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    from bandit.store.embedded import redis_server_binary

    redis_version = subprocess.run([redis_server_binary(), "--version"], capture_output=True,
                                   text=True, check=False).stdout.split()[2].removeprefix("v=")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} x {cpu}"
            f"{memory}; {platform.system()} {platform.release()}; Python "
            f"{platform.python_version()}; redis-server {redis_version}; "
            f"{', '.join(versions)}; wrk {'present' if shutil.which('wrk') else 'absent'}; "
            f"load average before the run: {load}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs that check the suite")
    parser.add_argument("--soak", action="store_true", help="add the 10-minute soak")
    parser.add_argument("--only", help="comma-separated script names (bench_http, ...)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results.txt"))
    arguments = parser.parse_args()
    plan = [(name, quick if arguments.quick else full)
            for name, (full, quick) in SCRIPTS.items()]
    if arguments.soak:
        plan.append(SOAK)
    if arguments.only:
        wanted = {name.removesuffix(".py") for name in arguments.only.split(",")}
        unknown = wanted - {name.removesuffix(".py") for name, _ in plan}
        if unknown:
            parser.error(f"--only: no benchmark named {', '.join(sorted(unknown))}")
        plan = [(name, args) for name, args in plan if name.removesuffix(".py") in wanted]
    failed: list[str] = []
    with arguments.out.open("w") as out:
        header = f"# {describe_machine()}\n"
        print(header, end="", flush=True)
        out.write(header)
        for name, args in plan:
            module = f"benchmarks.{name.removesuffix('.py')}"
            command = [sys.executable, "-m", module, *args]
            title = f"\n## {' '.join(['python', '-m', module, *args])}\n"
            print(title, end="", flush=True)
            out.write(title)
            started = time.monotonic()
            with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, cwd=HERE.parent) as process:
                assert process.stdout is not None
                for line in process.stdout:
                    print(line, end="", flush=True)
                    out.write(line)
            status = process.returncode
            footer = f"[{name}: exit {status}, {time.monotonic() - started:.0f} s]\n"
            print(footer, end="", flush=True)
            out.write(footer)
            out.flush()
            if status != 0:
                failed.append(name)
    print(f"\nwritten to {arguments.out}"
          + (f"; FAILED: {', '.join(failed)}" if failed else "; every benchmark ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
