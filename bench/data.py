"""keel data vs DVC, side by side in one run: the commands users type, end to end.

    .venv/bin/python bench/data.py --dvc-python bench/.venv-dvc/bin/python
    .venv/bin/python bench/data.py --quick          # small sizes, a smoke run

Every figure is one CLI command in a fresh process (start-up included, as a
user pays it), in its own git repository per tool, on the same bytes:

- one 1 GiB file (random bytes): ``add`` cold, ``add`` again unchanged,
  ``checkout`` after deleting the file, ``push`` to a local-folder remote;
- 20,000 small files of 1-8 KiB in 50 folders: ``add`` cold, ``add`` again
  unchanged, ``add`` after changing one file, ``status``, ``checkout`` after
  ``rm -r``, ``push`` to a local-folder remote.

Steps run one after the other as a user types them: the data is written, then
added at once (no pause: a file written less than a second before ``add`` is in
the racy window of a coarse-timestamp file system); every cache (keel's stat
cache and parsed trees, DVC's state database, the page cache) is as the previous
step left it. For keel each step is also run in process (``keel.sdk.data``
imported first, only the call timed) in a repository of its own that went through
the same steps: the table shows ``CLI (in-process)``, the difference being the
start-up of the ``keel`` command.

DVC runs with its defaults (cache type ``reflink,copy``: copies on ext4).
keel runs with its defaults too (``link = auto``: a reflink where the file
system has them, else a hard link, but a copy when running as root, because
root can write through a read-only hard link). When the bench runs as root,
extra rows show keel with ``--link hardlink`` (what a non-root user gets).

Both tools run from compiled bytecode, as an installed package does (pip
compiles ``.pyc`` files at install time; DVC's venv has them). keel's sources
are compiled once before the timings (``compileall``, into the git-ignored
``__pycache__`` folders), so a development checkout run with
``PYTHONDONTWRITEBYTECODE=1`` does not pay for compiling its modules on every command.

Peak memory is the largest resident set of any measured command of the tool
(``wait4`` rusage of the child; the bench's own process stays small, since Linux
carries the parent's peak into a child). The 1 GiB file and the 20,000 small files
are generated once per run into a temporary folder (removed at the end, also when
the bench fails) and copied into each tool's repository just before its ``add``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tracking import fmt_ratio, median_of, print_comparison  # noqa: E402

DEFAULT_DVC_PYTHON = HERE / ".venv-dvc" / "bin" / "python"
FULL = {"big": 1 << 30, "small": 20_000}
QUICK = {"big": 128 << 20, "small": 2_000}
DVC_ENV = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "true", "DVC_NO_UPDATER": "1"}

# key: (label, minimum speed-up asked by the issue)
WORKLOADS = {
    "big_add": ("{big}: add, cold", 5),
    "big_readd": ("{big}: add again, unchanged", 5),
    "big_checkout": ("{big}: checkout after rm", 5),
    "big_push": ("{big}: push to a local remote", 5),
    "small_add": ("{small} small files: add, cold", 10),
    "small_readd": ("{small} small files: add again, unchanged", 5),
    "small_readd1": ("{small} small files: add after 1 change", 5),
    "small_status": ("{small} small files: status", 5),
    "small_checkout": ("{small} small files: checkout after rm -r", 10),
    "small_push": ("{small} small files: push to a local remote", 10),
}


class Tool:
    """How one tool's commands are spelled. ``inproc``: the python that runs keel's steps in
    process (``bench/data.py --inproc STEP``, which prints the call's own seconds)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], link: str | None = None, inproc: str | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.link = link
        self.inproc = inproc

    def cmd(self, step: str, target: str, remote: str = "") -> list[list[str]]:
        """The command(s) of ``step``: the last one is timed, the others are set-up."""
        keel = self.name.startswith("keel")
        link = ["--link", self.link] if keel and self.link else []
        if self.inproc:
            setup = [self.argv + ["remote", "add", "-d", "bench", remote]] if step == "push" else []
            return [*setup, [self.inproc, __file__, "--inproc", step, target, self.link or ""]]
        if step == "add":
            return [self.argv + (["data", "add", *link, target] if keel else ["add", "-q", target])]
        if step == "status":
            return [self.argv + (["data", "status"] if keel else ["status", "-q"])]
        if step == "checkout":
            return [self.argv + (["data", "checkout", *link] if keel else ["checkout", "-q"])]
        if step == "push":
            add = ["remote", "add", "-d", "bench", remote]
            return [self.argv + add, self.argv + (["data", "push"] if keel else ["push", "-q"])]
        raise ValueError(step)


def run_timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command; ``(seconds, peak RSS MB, output)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # `dvc status -q` exits 1 when something changed
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{output[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, output


def make_big(path: Path, size: int) -> None:
    chunk = 64 << 20
    rng = random.Random(7)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(chunk, left)
            fh.write(rng.randbytes(n))
            left -= n


def make_small(folder: Path, count: int) -> None:
    rng = random.Random(11)
    for i in range(count):
        sub = folder / f"d{i % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(1024, 8192)))


def new_repo(folder: Path, tool: Tool, env: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "b@example.com"], ["config", "user.name", "bench"]):
        subprocess.run(["git", *args], cwd=folder, check=True)
    init = tool.argv + (["init"] if tool.name.startswith("keel") else ["init", "-q"])
    subprocess.run(init, cwd=folder, env=env, check=True, capture_output=True)


def scenario(tool: Tool, tmp: Path, sizes: dict[str, int], seeds: dict[str, Path], raw: dict[str, Any]) -> None:
    env = {**os.environ, **tool.env}
    results: dict[str, float] = {}
    peak = 0.0

    def timed(key: str, argvs: list[list[str]], cwd: Path) -> None:
        nonlocal peak
        for argv in argvs[:-1]:
            subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
        seconds, rss, output = run_timed(argvs[-1], cwd, env)
        if tool.inproc:  # the call's own time, printed by the child
            seconds = float(output.strip().splitlines()[-1].split()[-1])
        results[key] = seconds
        peak = max(peak, rss)
        print(f"  .. {tool.name:<13} {key:<15} {seconds:7.3f} s  {rss:6.0f} MB", file=sys.stderr)

    # -- one big file -----------------------------------------------------------------------
    repo = tmp / f"{tool.name}-big"
    new_repo(repo, tool, env)
    shutil.copyfile(seeds["big"], repo / "big.bin")
    timed("big_add", tool.cmd("add", "big.bin"), repo)
    timed("big_readd", tool.cmd("add", "big.bin"), repo)
    (repo / "big.bin").unlink()
    timed("big_checkout", tool.cmd("checkout", "big.bin"), repo)
    timed("big_push", tool.cmd("push", "big.bin", str(tmp / f"{tool.name}-big-remote")), repo)
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(tmp / f"{tool.name}-big-remote", ignore_errors=True)

    # -- many small files -----------------------------------------------------------------------
    repo = tmp / f"{tool.name}-small"
    new_repo(repo, tool, env)
    shutil.copytree(seeds["small"], repo / "small")
    timed("small_add", tool.cmd("add", "small"), repo)
    timed("small_readd", tool.cmd("add", "small"), repo)
    victim = repo / "small" / "d07" / "f00007.txt"
    content = victim.read_bytes()
    victim.unlink()  # DVC may have linked it; write a new file
    victim.write_bytes(b"changed " + content)
    timed("small_readd1", tool.cmd("add", "small"), repo)
    timed("small_status", tool.cmd("status", "small"), repo)
    shutil.rmtree(repo / "small")
    timed("small_checkout", tool.cmd("checkout", "small"), repo)
    count = sum(1 for _ in (repo / "small").rglob("*.txt"))
    if count != sizes["small"]:
        raise RuntimeError(f"{tool.name} checked out {count} files, not {sizes['small']}")
    timed("small_push", tool.cmd("push", "small", str(tmp / f"{tool.name}-small-remote")), repo)
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(tmp / f"{tool.name}-small-remote", ignore_errors=True)

    for key, seconds in results.items():
        raw.setdefault(key, {}).setdefault(tool.name, []).append({"seconds": seconds})
    raw.setdefault("memory", {}).setdefault(tool.name, []).append({"seconds": peak})


def fmt_s(value: float | None) -> str:
    if value is None:
        return "error"
    return f"{value:,.2f} s" if value >= 1 else f"{value * 1000:,.0f} ms"


def fmt_mb(value: float | None) -> str:
    return "error" if value is None else f"{value:,.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dvc-python", default=str(DEFAULT_DVC_PYTHON), help="python of a venv with dvc installed")
    parser.add_argument("--keel-python", default=sys.executable, help="python with keel (default: this one)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; report medians")
    parser.add_argument("--tmpdir", help="where the repositories go (default: the system temp dir)")
    parser.add_argument("--no-hardlink-rows", action="store_true", help="skip keel --link hardlink (as root)")
    parser.add_argument("--make-seeds", nargs=3, metavar=("DIR", "BIG", "SMALL"), help=argparse.SUPPRESS)
    parser.add_argument("--inproc", nargs=3, metavar=("STEP", "TARGET", "LINK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inproc:
        return inproc_step(*args.inproc)
    if args.make_seeds:  # in a child process: this one must stay small (see below)
        folder, big_size, small_count = args.make_seeds
        make_big(Path(folder) / "seed-big.bin", int(big_size))
        make_small(Path(folder) / "seed-small", int(small_count))
        return 0
    sizes = QUICK if args.quick else FULL
    dvc_python = os.path.abspath(args.dvc_python)
    keel_python = os.path.abspath(args.keel_python)
    tools = []
    if Path(dvc_python).exists():
        dvc_env = {**DVC_ENV, "PYTHONPATH": ""}
        tools.append(Tool("dvc", [str(Path(dvc_python).with_name("dvc"))], dvc_env))
    keel_cmd = [str(Path(keel_python).with_name("keel"))]
    _keel_bytecode(keel_python)
    tools.append(Tool("keel", keel_cmd, {}))
    tools.append(Tool("keel-inproc", keel_cmd, {}, inproc=keel_python))
    if os.geteuid() == 0 and not args.no_hardlink_rows:
        tools.append(Tool("keel-hardlink", keel_cmd, {}, link="hardlink"))

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-data-", dir=args.tmpdir))
    raw: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        seeds = {"big": tmp / "seed-big.bin", "small": tmp / "seed-small"}
        # Linux carries a process's peak RSS across fork and exec: the data is made in a child
        # so that this process stays small and the tools' peaks are their own.
        seed_cmd = [sys.executable, __file__, "--make-seeds", str(tmp), str(sizes["big"]), str(sizes["small"])]
        subprocess.run(seed_cmd, check=True)
        for _ in range(args.rounds):
            for tool in tools:
                scenario(tool, tmp, sizes, seeds, raw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started

    versions = {
        "dvc": _version([str(Path(dvc_python).with_name("dvc")), "--version"]) if tools[0].name == "dvc" else None,
        "keel": _version([*keel_cmd, "--version"]).replace("keel ", ""),
    }
    big = f"{sizes['big'] >> 20:,} MiB file" if sizes["big"] < 1 << 30 else "1 GiB file"
    rows = []
    for variant in ("keel", "keel-hardlink"):
        if variant not in {t.name for t in tools}:
            continue
        for key, (label, target) in WORKLOADS.items():
            if variant == "keel-hardlink" and not key.startswith("big") and key != "small_checkout":
                continue
            dvc = median_of(raw.get(key, {}).get("dvc"), "seconds")
            keel = median_of(raw.get(key, {}).get(variant), "seconds")
            inproc = median_of(raw.get(key, {}).get("keel-inproc"), "seconds") if variant == "keel" else None
            ratio = dvc / keel if dvc and keel else None
            suffix = " [keel --link hardlink]" if variant == "keel-hardlink" else ""
            rows.append(
                {
                    "workload": label.format(big=big, small=f"{sizes['small']:,}") + suffix,
                    "mlflow_text": fmt_s(dvc),
                    "keel_text": fmt_s(keel) + (f" ({fmt_s(inproc)})" if inproc is not None else ""),
                    "speedup": ratio,
                    "target": f">= {target}x faster",
                    "met": None if ratio is None else ratio >= target,
                }
            )
        dvc_mem = median_of(raw.get("memory", {}).get("dvc"), "seconds")
        keel_mem = median_of(raw.get("memory", {}).get(variant), "seconds")
        rows.append(
            {
                "workload": "peak memory of any command (MB)" + (" [hardlink]" if variant != "keel" else ""),
                "mlflow_text": fmt_mb(dvc_mem),
                "keel_text": fmt_mb(keel_mem),
                "speedup": dvc_mem / keel_mem if dvc_mem and keel_mem else None,
                "target": "<= DVC's",
                "met": None if not (dvc_mem and keel_mem) else keel_mem <= dvc_mem,
            }
        )
    info = {
        "keel": {
            "version": versions["keel"],
            "python": platform.python_version(),
            "sqlite": "-",
            "executable": keel_python,
        },
        "mlflow": {"version": versions["dvc"] or "?", "python": "-", "sqlite": "-", "executable": dvc_python}
        if versions["dvc"]
        else None,
    }
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_comparison(
            rows, info, tmp, f"rounds={args.rounds}; every figure is one CLI command; total {total:.0f} s", args.quick
        )
    # The shared printer names its peer MLflow; here the peer is DVC.
    print(buffer.getvalue().replace("MLflow", "DVC").replace("mlflow", "dvc   "))
    print("keel: the `keel` command as a fresh process (in brackets: the same step in process, start-up excluded)")
    print("speed-up = DVC seconds / keel CLI seconds (memory: DVC MB / keel MB)")
    worst = min((r["speedup"] for r in rows if r["speedup"]), default=None)
    print(f"lowest speed-up: {fmt_ratio(worst)}")
    return 0


def inproc_step(step: str, target: str, link: str) -> int:
    """Run one step through ``keel.sdk.data`` in this process; print the call's seconds."""
    from keel.sdk import data

    t0 = time.perf_counter()
    if step == "add":
        data.add([target], link=link or None)
    elif step == "status":
        data.status()
    elif step == "checkout":
        data.checkout(link=link or None)
    elif step == "push":
        data.push()
    else:
        raise ValueError(step)
    print(f"seconds {time.perf_counter() - t0:.6f}")
    return 0


def _keel_bytecode(keel_python: str) -> None:
    """Compile keel's modules to ``.pyc`` files beside them (``__pycache__``, git-ignored),
    as installing keel would; the other packages in its venv have theirs already."""
    where = subprocess.run(
        [keel_python, "-c", "import keel, os; print(os.path.dirname(keel.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([keel_python, "-m", "compileall", "-q", where], check=True, capture_output=True)


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **DVC_ENV}).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
