//! CPU time and memory of a process, read from `/proc`.

use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat` (`getconf CLK_TCK`).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// utime + stime of the server, in seconds.
    pub cpu_secs: f64,
    /// Current resident set (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set so far (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Threads of the process.
    pub threads: u64,
    /// utime + stime of the bench itself, in seconds.
    pub bench_cpu_secs: f64,
}

/// utime + stime of `pid` (or `self`, or `thread-self`) in seconds.
pub(crate) fn cpu_secs(pid: &str, tck: u64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<u64>()
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    Ok((field(14)? + field(15)?) as f64 / tck as f64)
}

/// CPU time of the calling thread in seconds, from `/proc/thread-self/schedstat` (nanoseconds
/// on the CPU), or from its `stat` (clock ticks, 10 ms each) where that file is missing: a
/// thread writing 200 sockets runs for less than a tick.
pub(crate) fn thread_cpu_secs(tck: u64) -> Result<f64> {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()));
    match ns {
        Some(ns) => Ok(ns as f64 / 1e9),
        None => cpu_secs("thread-self", tck),
    }
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads the server `pid` (and the bench's own CPU time).
pub fn sample(pid: u32, tck: u64) -> Result<Sample> {
    let at = Instant::now();
    let pid_s = pid.to_string();
    let cpu = cpu_secs(&pid_s, tck)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Sample {
        at,
        cpu_secs: cpu,
        rss_kib: status_kib(&status, "VmRSS"),
        hwm_kib: status_kib(&status, "VmHWM"),
        threads: status_kib(&status, "Threads"),
        bench_cpu_secs: cpu_secs("self", tck).unwrap_or(0.0),
    })
}

/// One reading of every server instance of a run (in instance order), and their sum.
#[derive(Debug, Clone)]
pub struct ClusterSample {
    /// One sample per instance.
    pub each: Vec<Sample>,
    /// The instances as one: CPU, RSS, peak RSS and threads summed; the time and the bench's
    /// own CPU (the same process for every reading) from the first reading.
    pub total: Sample,
}

impl ClusterSample {
    /// Reads every process in `pids` (at least one).
    pub fn take(pids: impl IntoIterator<Item = u32>, tck: u64) -> Result<Self> {
        let each = pids.into_iter().map(|pid| sample(pid, tck)).collect::<Result<Vec<_>>>()?;
        let first = *each.first().ok_or_else(|| anyhow!("no server process to sample"))?;
        let total = Sample {
            cpu_secs: each.iter().map(|s| s.cpu_secs).sum(),
            rss_kib: each.iter().map(|s| s.rss_kib).sum(),
            hwm_kib: each.iter().map(|s| s.hwm_kib).sum(),
            threads: each.iter().map(|s| s.threads).sum(),
            ..first
        };
        Ok(Self { each, total })
    }
}

/// Server cost per phase: of all instances summed, and of each instance when there are
/// several (with one, the sum is that instance and the per-instance list stays empty).
#[derive(Debug, Clone, Default)]
pub struct PhaseCosts {
    /// Every instance summed, in phase order.
    pub total: Vec<PhaseCost>,
    /// `per_instance[i]`: instance i's phases, in phase order (several instances only).
    pub per_instance: Vec<Vec<PhaseCost>>,
}

impl PhaseCosts {
    /// Records phase `name` between two readings of the same instances; returns its summed cost.
    pub fn record(&mut self, name: &str, a: &ClusterSample, b: &ClusterSample) -> PhaseCost {
        if a.each.len() > 1 {
            self.per_instance.resize_with(a.each.len(), Vec::new);
            for (costs, (sa, sb)) in self.per_instance.iter_mut().zip(a.each.iter().zip(&b.each)) {
                costs.push(PhaseCost::between(name, sa, sb));
            }
        }
        let total = PhaseCost::between(name, &a.total, &b.total);
        self.total.push(total.clone());
        total
    }
}

/// What one phase cost the server.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseCost {
    /// Phase name.
    pub name: String,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Server CPU seconds (user + system) spent in the phase.
    pub server_cpu_secs: f64,
    /// Server CPU as % of one core over the phase.
    pub server_cpu_pct_of_core: f64,
    /// Bench (client side) CPU seconds in the phase: it shares the machine with the server.
    pub bench_cpu_secs: f64,
    /// Server VmRSS at the start of the phase, MiB.
    pub rss_start_mib: f64,
    /// Server VmRSS at the end of the phase, MiB.
    pub rss_end_mib: f64,
    /// Server VmHWM (peak RSS since the process started) at the end of the phase, MiB.
    pub peak_rss_mib: f64,
    /// Server threads at the end of the phase.
    pub threads_end: u64,
}

impl PhaseCost {
    /// The cost between two samples of the same process.
    pub fn between(name: &str, a: &Sample, b: &Sample) -> Self {
        let wall = b.at.duration_since(a.at).as_secs_f64();
        let cpu = (b.cpu_secs - a.cpu_secs).max(0.0);
        Self {
            name: name.to_owned(),
            wall_secs: wall,
            server_cpu_secs: cpu,
            server_cpu_pct_of_core: if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 },
            bench_cpu_secs: (b.bench_cpu_secs - a.bench_cpu_secs).max(0.0),
            rss_start_mib: a.rss_kib as f64 / 1024.0,
            rss_end_mib: b.rss_kib as f64 / 1024.0,
            peak_rss_mib: b.hwm_kib as f64 / 1024.0,
            threads_end: b.threads,
        }
    }
}

/// The machine the bench ran on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// Cores available to the process.
    pub nproc: usize,
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal, MiB.
    pub mem_total_mib: u64,
    /// MemAvailable at the start, MiB.
    pub mem_available_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg at the start (1, 5, 15 minutes): other work on the machine skews figures.
    pub load_avg_at_start: String,
    /// RLIMIT_NOFILE (soft, hard) after the bench raised it.
    pub nofile_limit: (u64, u64),
    /// Clock ticks per second used for /proc CPU times.
    pub clk_tck: u64,
}

impl Machine {
    /// Reads /proc.
    pub fn detect(nofile_limit: (u64, u64), clk_tck: u64) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            mem_total_mib: status_kib(&meminfo, "MemTotal") / 1024,
            mem_available_mib: status_kib(&meminfo, "MemAvailable") / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_avg_at_start: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            nofile_limit,
            clk_tck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu_secs: f64, rss_kib: u64) -> Sample {
        Sample { at: Instant::now(), cpu_secs, rss_kib, hwm_kib: rss_kib, threads: 4, bench_cpu_secs: 1.0 }
    }

    #[test]
    fn cluster_samples_sum_the_servers_and_count_the_bench_once() -> Result<()> {
        let me = std::process::id();
        let s = ClusterSample::take([me, me], clk_tck())?;
        assert_eq!(s.each.len(), 2);
        assert_eq!(s.total.threads, s.each[0].threads + s.each[1].threads);
        assert!(s.total.rss_kib >= s.each[0].rss_kib);
        assert!((s.total.bench_cpu_secs - s.each[0].bench_cpu_secs).abs() < f64::EPSILON);
        assert!(ClusterSample::take([], clk_tck()).is_err());
        Ok(())
    }

    #[test]
    fn phases_are_kept_per_instance_only_with_several() {
        let one = |cpu| ClusterSample { each: vec![reading(cpu, 1024)], total: reading(cpu, 1024) };
        let mut single = PhaseCosts::default();
        single.record("idle", &one(1.0), &one(2.0));
        assert!(single.per_instance.is_empty());
        assert_eq!(single.total.len(), 1);

        let two = |cpu| ClusterSample {
            each: vec![reading(cpu, 1024), reading(2.0 * cpu, 2048)],
            total: reading(3.0 * cpu, 3072),
        };
        let mut several = PhaseCosts::default();
        let total = several.record("idle", &two(1.0), &two(2.0));
        assert!((total.server_cpu_secs - 3.0).abs() < 1e-9);
        assert_eq!(several.per_instance.len(), 2);
        assert!((several.per_instance[1][0].server_cpu_secs - 2.0).abs() < 1e-9);
    }
}
