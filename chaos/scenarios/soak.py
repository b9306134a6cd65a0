"""Soak: steady publish + subscribe load for a long time; Ferry's RSS and open fds stay flat.

Samples RSS, open fds and threads every few seconds; after a warm-up (the first 10 %, at
least 30 s) the least-squares slopes must stay small: RSS under 1 MB/min (and under 64 MB of
growth over the run), fds and threads not growing.
"""

from __future__ import annotations

import time

from chaos.harness import Env, Run, ScenarioResult, log
from chaos.observe import Sample, sample, slope_per_min

EVERY_S = 5.0
RSS_SLOPE_LIMIT = 1.0  # MB per minute
RSS_GROWTH_LIMIT = 64.0  # MB over the measured part of the run
FD_SLOPE_LIMIT = 0.5  # fds per minute


def soak(env: Env) -> ScenarioResult:
    seconds = env.soak_s if env.full else 60.0
    run = Run(env, "soak", plan={"pause_s": 0.01}).start()
    run.history.fault("none (steady load)", f"{seconds / 60:.0f} min")
    samples: list[Sample] = []
    t_end = time.monotonic() + seconds
    next_log = time.monotonic() + 300
    while time.monotonic() < t_end:
        time.sleep(EVERY_S)
        run.check_alive()
        if (s := sample(run.pid())) is not None:
            samples.append(s)
        if time.monotonic() > next_log and samples:
            next_log += 300
            log(f"soak: {len(samples)} samples, rss {samples[-1].rss_mb:.0f} MB, "
                f"fds {samples[-1].fds}, {dict(run.history.outcome_counts())}")  # fmt: skip
    result = run.finish()
    judge(result, samples, seconds)
    return result


def judge(result: ScenarioResult, samples: list[Sample], seconds: float) -> None:
    if len(samples) < 4:
        result.problems.append("too few samples")
        return
    start = samples[0].t + max(30.0, seconds * 0.1)
    steady = [s for s in samples if s.t >= start] or samples
    rss = slope_per_min([(s.t, s.rss_mb) for s in steady])
    fds = slope_per_min([(s.t, float(s.fds)) for s in steady])
    threads = slope_per_min([(s.t, float(s.threads)) for s in steady])
    growth = steady[-1].rss_mb - steady[0].rss_mb
    result.extra.update({
        "samples": len(samples), "minutes": round(seconds / 60, 1),
        "rss_mb_start_end_max": [round(steady[0].rss_mb, 1), round(steady[-1].rss_mb, 1),
                                 round(max(s.rss_mb for s in steady), 1)],
        "rss_slope_mb_per_min": round(rss, 3), "fds_start_end": [steady[0].fds, steady[-1].fds],
        "fd_slope_per_min": round(fds, 3), "thread_slope_per_min": round(threads, 3),
        "rss_mb_by_minute": _by_minute(samples),
    })  # fmt: skip
    if rss > RSS_SLOPE_LIMIT or growth > RSS_GROWTH_LIMIT:
        result.problems.append(f"RSS grows {rss:.2f} MB/min ({growth:.0f} MB over the run)")
    if fds > FD_SLOPE_LIMIT:
        result.problems.append(f"open fds grow {fds:.2f}/min")
    if threads > FD_SLOPE_LIMIT:
        result.problems.append(f"threads grow {threads:.2f}/min")


def _by_minute(samples: list[Sample]) -> list[float]:
    """RSS at each whole minute of the run (the first sample from it on), to see it level off."""
    out: list[float] = []
    t0 = samples[0].t
    for s in samples:
        while s.t - t0 >= 60 * len(out):
            out.append(round(s.rss_mb, 1))
    return out
