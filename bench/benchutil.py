"""What the benchmarks share: timing, running the command line, the machine's description and
writing the JSON report.

The scripts import it as a sibling module (`python bench/NAME.py` puts bench/ on sys.path).
"""

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np


def median_seconds(fn, repeats):
    """Median wall time of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_in_turn(functions, repeats):
    """{name: (min, median) ms} of `functions`, called one after the other `repeats` times."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: (round(min(t), 1), round(float(np.median(t)), 1)) for name, t in times.items()}


def run_cli(argv):
    """Run `keras-maskrcnn ARGV...` in a new process, as a user would (failure raises) → its
    wall time in seconds."""
    argv = list(map(str, argv))
    print("$ keras-maskrcnn " + " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "keras_maskrcnn", *argv], check=True)
    return time.perf_counter() - start


def machine_info(**versions):
    """CPU count, processor, the CPU's model name, the checkout's git commit and the given
    library versions, for the report (bfloat16's speed, for one, differs between CPU models
    that both have AVX512-BF16)."""
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(), "bfloat16_cpu_flags": _cpu_flags(BFLOAT16_CPU_FLAGS),
            "commit": _git_commit(), **versions}


# The CPU flags that decide bfloat16's speed: AVX512-BF16 converts and dots, AMX multiplies
# tiles (a model name such as "Intel(R) Xeon(R) Processor" does not say which a CPU has).
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def _git_commit():
    """The checkout's short commit, with "-dirty" when tracked files differ from it; None
    outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _cpu_model():
    """/proc/cpuinfo's model name, or None where there is none."""
    return _cpuinfo_field("model name")


def _cpu_flags(wanted):
    """Those of `wanted` that /proc/cpuinfo's flags list, or None where there is none."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else [flag for flag in wanted if flag in flags.split()]


def _cpuinfo_field(name):
    """The value of /proc/cpuinfo's first `name` line, or None where there is none."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def write_report(report, path):
    """Write `report` as indented JSON to `path` (folders created) and print it; the command
    that ran is recorded as `command` and today's UTC date as `date`, unless the report has them."""
    report = {"command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), **report}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
