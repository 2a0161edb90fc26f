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
from collections import defaultdict
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
    threads = torch.get_num_threads()
    return f"CPU {name}, {threads} thread{'s' * (threads != 1)}"


def markdown_table(header: list, rows: list) -> str:
    """A Markdown table; the first column is left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(path: str, title: str, command: str, device, body: str) -> None:
    """Append a section to `path`: `title`, the command, device, torch version, git commit, date
    and load average at the end of the run (timings on a loaded machine say so), then `body`."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {title}", "",
        f"- command: `{command}`",
        f"- device: {device_name(device)}; torch {torch.__version__}; commit {get_git_commit()}",
        f"- {date}; load average (1, 5, 15 min) at the end of the run: {load}", "",
        body, "",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def _short(name: str, most: int = 60) -> str:
    """An op or CUDA kernel name cut to `most` characters (kernel names run to hundreds)."""
    return name if len(name) <= most else name[: most - 3] + "..."


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
    rows = [[f"`{_short(e.key)}`", f"{getattr(e, attribute) / 1000 / calls:.2f}",
             f"{100 * getattr(e, attribute) / total:.1f} %", f"{e.count / calls:g}"]
            for e in events[:top]]
    rows.append(["all ops", f"{total / 1000 / calls:.2f}", "100 %", ""])
    return markdown_table(["op", "self ms per call", "share", "calls per call"], rows)


def module_table(fn, module, device, calls: int = 1, top: int = 8) -> str:
    """Where the time of `fn()` goes among `module`'s direct children (forward hooks; on CUDA
    each hook waits for the GPU), the rest being `module`'s own code between them; mean of
    `calls` calls, the `top` children largest first, as a Markdown table."""
    device = torch.device(device)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    spent = defaultdict(float)
    handles = []
    for name, child in module.named_children():
        handles.append(child.register_forward_pre_hook(
            lambda _m, _i, name=name: spent.__setitem__(name, spent[name] - clock())))
        handles.append(child.register_forward_hook(
            lambda _m, _i, _o, name=name: spent.__setitem__(name, spent[name] + clock())))
    try:
        start = clock()
        for _ in range(calls):
            fn()
        total = clock() - start
    finally:
        for handle in handles:
            handle.remove()
    parts = sorted(spent.items(), key=lambda item: item[1], reverse=True)
    if len(parts) > top:
        others = parts[top:]
        parts = parts[:top] + [(f"other parts ({len(others)})", sum(s for _, s in others))]
    parts.append((f"rest ({type(module).__name__}'s own code)", total - sum(spent.values())))
    rows = [[f"`{name}`" if name in spent else name, f"{1000 * seconds / calls:.2f}",
             f"{100 * seconds / total:.1f} %"] for name, seconds in parts]
    rows.append(["all", f"{1000 * total / calls:.2f}", "100 %"])
    return markdown_table(["part", "ms per call", "share"], rows)
