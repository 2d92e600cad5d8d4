"""The hostile campaign: thousands of mutants per reader, one table of what went wrong.

    python benchmarks/hostile.py                  # 2000 cases per area (model, checkpoint, config, --set,
                                                  # each data format, C header, C model, downloads)
    python benchmarks/hostile.py --cases 5000     # more
    python benchmarks/hostile.py --quick          # 40 cases per area (tests/test_hostile.py runs this)
    python benchmarks/hostile.py --run ID         # resume run ID (benchmarks/hostile_runs/ID.json)
    python benchmarks/hostile.py --replay AREA N  # run one case here, print its outcome

Cases (benchmarks/hostile_cases.py) run in worker processes, many per worker, each judged:
- unexpected: an exception that is not one of qmtik's own, or a message of more than one line;
- hang: no answer within 10 s for one case (the worker is killed and replaced);
- over-allocation: the worker's peak RSS above 256 MB + 4x the case's input size (a worker
  that crosses it reports the case and is replaced), or an allocation refused by its address
  space limit (RLIMIT_AS: its size at start + 2 GiB), seen as MemoryError or a message of
  numpy's "Unable to allocate" or qmtik's "too large to read";
- wrong: the unmutated seed not loading or not equal to the reference, or a mutant accepted that
  the area's strict validator refuses (a .qmt that loads must be encode(load(file)) == file);
- damaged: an input or a previous output changed, or a failed download left the folder it made.
Every cell after "cases" must be 0. One JSON per run goes to benchmarks/hostile_runs/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "hostile_runs"
HANG_SECONDS = 10.0
RSS_BASE = 256 << 20
COLUMNS = ("unexpected", "hang", "overalloc", "wrong", "damaged")
HEADINGS = ("area", "cases", "unexpected exceptions", "hangs", "over-allocations", "wrong results", "files damaged")
EXAMPLES = 5  # failing cases kept per area and outcome, to replay


# --- the worker ----------------------------------------------------------------------------------


def worker() -> None:
    """Read 'AREA INDEX' lines, run each case, answer one JSON line each; exit after a case that
    took the peak RSS past its bound (a peak only grows)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.path.insert(0, str(HERE))
    import hostile_cases as cases

    seeds, server = cases.seeds(), cases.Server()
    vm = _vm_bytes()
    if vm:
        resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))
    root = Path(tempfile.mkdtemp(prefix="qmtik-hostile-"))
    for line in sys.stdin:
        area, index = line.split()
        folder = root / f"{area}-{index}"
        folder.mkdir()
        outcome, detail = cases.run_case(area, int(index), seeds[area], folder, server)
        size = sum(len(b) for b in cases.case_files(area, int(index), seeds[area]).values())
        peak = peak_rss()
        over = peak > RSS_BASE + 4 * size
        if over:
            outcome, detail = "overalloc", f"peak RSS {peak >> 20} MB for {size} bytes of input ({outcome})"
        shutil.rmtree(folder, ignore_errors=True)
        print(json.dumps({"outcome": outcome, "detail": detail[:300], "peak_mb": peak >> 20}), flush=True)
        if over:
            break
    shutil.rmtree(root, ignore_errors=True)


def peak_rss() -> int:
    """This process's peak RSS in bytes: /proc's VmHWM, its own memory's high-water mark, else
    ru_maxrss. On Linux ru_maxrss survives exec: a worker spawned by a large parent (the test
    suite, 450 MB in) starts at the parent's peak, and every case was counted an over-allocation."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _vm_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- the parent ----------------------------------------------------------------------------------


class Worker:
    """A worker process: ask(area, index) -> (outcome, detail), or a hang after HANG_SECONDS."""

    def __init__(self):
        self.process = None

    def ask(self, area: str, index: int) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
            self.started = True
        self.process.stdin.write(f"{area} {index}\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], HANG_SECONDS + (30 if self.started else 0))
        self.started = False
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            return {"outcome": "hang" if not ready else "unexpected", "detail": "no answer" if not ready else "died"}
        return json.loads(line)

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def run_area(area: str, cases: int, record: dict, save) -> None:
    """Run cases 0..cases-1 of area not yet in record, counting outcomes."""
    entry = record["areas"].setdefault(area, {"done": 0, "counts": {}, "examples": {}})
    member = Worker()
    try:
        for index in range(entry["done"], cases):
            answer = member.ask(area, index)
            outcome = answer["outcome"]
            if index == 0 and outcome != "valid":  # the seed must load and equal the reference
                outcome = "wrong" if outcome in ("valid", "refused") else outcome
            entry["counts"][outcome] = entry["counts"].get(outcome, 0) + 1
            if outcome in COLUMNS and len(entry["examples"].setdefault(outcome, [])) < EXAMPLES:
                entry["examples"][outcome].append([index, answer["detail"]])
            entry["done"] = index + 1
            if index % 100 == 99:
                save()
    finally:
        member.close()
        save()


def table(record: dict) -> str:
    rows = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    for area, entry in record["areas"].items():
        counts = entry["counts"]
        rows.append("| " + " | ".join([area, str(entry["done"]), *(str(counts.get(c, 0)) for c in COLUMNS)]) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    global HANG_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per area (default 2000)")
    parser.add_argument("--quick", action="store_true", help="40 cases per area")
    parser.add_argument("--areas", help="a comma-separated choice of areas (default: all)")
    parser.add_argument("--run", help="resume this run (its JSON in benchmarks/hostile_runs/)")
    parser.add_argument("--jobs", type=int, default=2, help="workers at once (default 2)")
    parser.add_argument("--json", help="write the run's JSON here instead")
    parser.add_argument("--hang-seconds", type=float, default=HANG_SECONDS, help="a hang's threshold (default 10)")
    parser.add_argument("--replay", nargs=2, metavar=("AREA", "N"), help="run one case in this process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    HANG_SECONDS = args.hang_seconds
    if args.worker:
        worker()
        return 0
    sys.path.insert(0, str(HERE))
    import hostile_cases

    if args.replay:
        area, index = args.replay[0], int(args.replay[1])
        folder = Path(tempfile.mkdtemp(prefix="qmtik-replay-"))
        print(hostile_cases.run_case(area, index, hostile_cases.seeds()[area], folder, hostile_cases.Server()))
        return 0
    areas = args.areas.split(",") if args.areas else list(hostile_cases.AREAS)
    cases = 40 if args.quick else args.cases
    run_id = args.run or time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.json) if args.json else RUNS / f"{run_id}.json"
    record = json.loads(path.read_text()) if path.exists() else {"run": run_id, "cases": cases, "areas": {}}
    for area in areas:  # a resumed run keeps the areas it has, adding those asked for
        record["areas"].setdefault(area, {"done": 0, "counts": {}, "examples": {}})
    lock = threading.Lock()

    def save():
        with lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))

    started = time.monotonic()
    pending = list(areas)
    threads = []

    def take():
        while True:
            with lock:
                if not pending:
                    return
                area = pending.pop(0)
            run_area(area, cases, record, save)
            print(f"{area}: {record['areas'][area]['done']} cases", file=sys.stderr, flush=True)

    for _ in range(max(1, args.jobs)):
        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    record["seconds"] = round(time.monotonic() - started + record.get("seconds", 0), 1)
    save()
    print(table(record))
    print(f"\n{sum(e['done'] for e in record['areas'].values())} cases in {record['seconds']} s; {path}")
    bad = sum(e["counts"].get(c, 0) for e in record["areas"].values() for c in COLUMNS)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
