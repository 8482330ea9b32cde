"""The machine facts every benchmark prints beside its figures (BENCHMARKS.md asks for them), and
the few reporting steps benchmarks share."""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(*packages: str) -> dict:
    """CPU, cores, load, Python, date (UTC), torch threads and the versions of ``packages``."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in packages:
        try:
            info[name] = importlib.import_module(name).__version__
        except ImportError:
            info[name] = "not installed"
    if "torch" in packages and info["torch"] != "not installed":
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def machine_line(m: dict) -> str:
    """One line: 'AMD EPYC, 2 of 2 cores, load 0.6, Python 3.11.7, torch 2.13.0 (2 threads), ..., date'."""
    parts = [f"{m['cpu']}, {m['usable_cores']} of {m['cores']} cores, load {m['load_1min']}", f"Python {m['python']}"]
    for name, version in m.items():
        if name not in {"date", "cpu", "cores", "usable_cores", "load_1min", "python", "platform", "torch_threads"}:
            threads = f" ({m['torch_threads']} threads)" if name == "torch" and "torch_threads" in m else ""
            parts.append(f"{name} {version}{threads}")
    return ", ".join(parts) + f", {m['date']}"


def mean_and_se(differences) -> tuple[float, float]:
    """Mean of paired differences and its standard error (NaN where too few differences)."""
    values = [float(d) for d in differences]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    spread = math.sqrt(sum((d - mean) ** 2 for d in values) / (len(values) - 1))
    return mean, spread / math.sqrt(len(values))


def print_results(table: str, rows: list, json_path: str | None, *packages: str) -> None:
    """The machine line and ``table`` on stdout; with ``json_path``, the machine and ``rows`` there too."""
    info = machine_info(*packages)
    print(machine_line(info))
    print(table)
    if json_path:
        Path(json_path).write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
