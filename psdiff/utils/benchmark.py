"""Measuring speed and memory, and recording the results (tools/benchmark.py `model`, `train`).

Callables are timed interleaved (one call of each per round), so a load that comes and goes on
a shared machine reaches every variant alike; warm-up rounds are not kept; CUDA calls are timed
with CUDA events. Results are Markdown tables, appended to a file with what produced them.
"""

import os
import platform
import resource
import statistics
import time
from datetime import datetime, timezone

import torch

from .env import get_git_commit


def _seconds(fn, device: torch.device) -> float:
    """Wall time of one `fn()`; on CUDA between two events, once the GPU has finished."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def time_interleaved(calls: dict, device, repeats: int, warmup: int = 1) -> dict:
    """name -> the `repeats` times (s) of `calls[name]()`, one call of each name per round;
    the `warmup` rounds before are not kept."""
    device = torch.device(device)
    times = {name: [] for name in calls}
    for round_index in range(warmup + repeats):
        for name, fn in calls.items():
            seconds = _seconds(fn, device)
            if round_index >= warmup:
                times[name].append(seconds)
    return times


def median_ms(times: list) -> float:
    return 1000.0 * statistics.median(times)


def reset_peak_memory(device) -> None:
    """Start a new CUDA peak (the CPU's max RSS cannot be reset: it counts since the start)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device) -> int:
    """CUDA: max allocated since `reset_peak_memory`; CPU: the process's max resident set."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return kilobytes * 1024


def device_name(device) -> str:
    """The GPU's name, or the CPU's model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {name}, {torch.get_num_threads()} threads"


def markdown_table(header: list, rows: list) -> str:
    """A Markdown table; the first column is left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(path: str, title: str, command: str, device, body: str) -> None:
    """Append a section to `path`: `title`, the command, device, torch version, git commit, date
    and load average (timings on a loaded machine say so), then `body`."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {title}", "",
        f"- command: `{command}`",
        f"- device: {device_name(device)}; torch {torch.__version__}; commit {get_git_commit()}",
        f"- {date}; load average (1, 5, 15 min) before the run: {load}", "",
        body, "",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def profile_table(fn, device, calls: int = 1, top: int = 10) -> str:
    """Where the time of `fn()` goes: torch.profiler self time by op (device time on CUDA),
    averaged over `calls` calls, the `top` ops as a Markdown table with their share."""
    device = torch.device(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attribute) > 0]
    total = sum(getattr(e, attribute) for e in events)
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    rows = [[f"`{e.key}`", f"{getattr(e, attribute) / 1000 / calls:.2f}",
             f"{100 * getattr(e, attribute) / total:.1f} %", f"{e.count / calls:g}"]
            for e in events[:top]]
    rows.append(["all ops", f"{total / 1000 / calls:.2f}", "100 %", ""])
    return markdown_table(["op", "self ms per call", "share", "calls per call"], rows)
