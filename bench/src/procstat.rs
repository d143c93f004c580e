//! Resource use, read from `/proc` and Redis `INFO memory`.
//!
//! In-process, Herald, the receiver and the load generator are one process, so the
//! process totals count all three (the report says so). To tell them apart, Herald runs
//! on its own tokio runtime whose threads are named `herald` (sqlx names its SQLite
//! threads `sqlx-sqlite-…`); the harness's threads are named `bench`. Summing
//! `/proc/self/task/*/stat` by thread name splits the CPU time approximately: a thread
//! that exited during the run (idle blocking-pool threads do) takes its time with it.
//! Against a separate Herald (`--pid`), its own `/proc/<pid>` is read and nothing is mixed.

use std::{
    fs,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use serde::Serialize;

/// CPU and memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    /// Peak RSS since the process started (`VmHWM`).
    pub hwm_bytes: u64,
}

/// `/proc/self` or `/proc/<pid>`.
fn dir(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".into(), |p| format!("/proc/{p}"))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime, in seconds, from a `stat` file's text.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// A `kB` line of a `status` file, in bytes.
fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Reads the process's CPU and memory.
pub fn sample(pid: Option<u32>) -> anyhow::Result<Sample> {
    let d = dir(pid);
    let stat = fs::read_to_string(format!("{d}/stat"))
        .map_err(|e| anyhow::anyhow!("cannot read {d}/stat: {e}"))?;
    let status = fs::read_to_string(format!("{d}/status"))?;
    Ok(Sample {
        cpu_secs: stat_cpu_secs(&stat).unwrap_or(0.0),
        rss_bytes: status_bytes(&status, "VmRSS:").unwrap_or(0),
        hwm_bytes: status_bytes(&status, "VmHWM:").unwrap_or(0),
    })
}

/// CPU seconds of this process's live threads, by owner.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ThreadCpu {
    /// Threads named `herald*` or `sqlx*`: the in-process Herald.
    pub herald: f64,
    /// Threads named `bench*`: load generator, receiver, tails.
    pub harness: f64,
    /// Everything else (the main thread, progress bar).
    pub other: f64,
}

impl ThreadCpu {
    pub fn read() -> ThreadCpu {
        let mut out = ThreadCpu::default();
        let Ok(tasks) = fs::read_dir("/proc/self/task") else {
            return out;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let (Ok(comm), Ok(stat)) = (
                fs::read_to_string(path.join("comm")),
                fs::read_to_string(path.join("stat")),
            ) else {
                continue; // exited meanwhile
            };
            let secs = stat_cpu_secs(&stat).unwrap_or(0.0);
            let comm = comm.trim();
            if comm.starts_with("herald") || comm.starts_with("sqlx") {
                out.herald += secs;
            } else if comm.starts_with("bench") {
                out.harness += secs;
            } else {
                out.other += secs;
            }
        }
        out
    }

    /// `self - before`, never negative (threads that exited lose their time).
    pub fn since(&self, before: &ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            herald: (self.herald - before.herald).max(0.0),
            harness: (self.harness - before.harness).max(0.0),
            other: (self.other - before.other).max(0.0),
        }
    }
}

/// Redis `INFO memory`: (`used_memory`, `used_memory_peak`) in bytes.
pub async fn redis_memory(conn: &mut redis::aio::MultiplexedConnection) -> Option<(u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .ok()?;
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("used_memory")?, field("used_memory_peak")?))
}

/// Highest values seen by a [`Sampler`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Peaks {
    pub rss_bytes: u64,
    pub redis_used_bytes: u64,
}

/// Samples RSS and Redis memory every 250 ms, keeping the maxima, until dropped.
pub struct Sampler {
    peaks: Arc<Mutex<Peaks>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    /// `proc`: `Some(None)` for this process, `Some(Some(pid))` for another, `None` for
    /// no process (a remote Herald).
    pub fn start(
        proc: Option<Option<u32>>,
        redis: Option<redis::aio::MultiplexedConnection>,
    ) -> Sampler {
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peaks.clone(), stop.clone());
        tokio::spawn(async move {
            let mut redis = redis;
            while !s.load(Relaxed) {
                let rss = proc
                    .and_then(|pid| sample(pid).ok())
                    .map_or(0, |x| x.rss_bytes);
                let used = match redis.as_mut() {
                    Some(conn) => redis_memory(conn).await.map_or(0, |(u, _)| u),
                    None => 0,
                };
                {
                    let mut peaks = p.lock().unwrap_or_else(|e| e.into_inner());
                    peaks.rss_bytes = peaks.rss_bytes.max(rss);
                    peaks.redis_used_bytes = peaks.redis_used_bytes.max(used);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Sampler { peaks, stop }
    }

    pub fn peaks(&self) -> Peaks {
        *self.peaks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (tokio (rt) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100";
        let secs = stat_cpu_secs(stat).unwrap();
        assert!((secs - 300.0 / clock_ticks()).abs() < 1e-9);
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_bytes(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(status_bytes(status, "VmHWM:"), Some(2048 * 1024));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes);
        assert!(s.cpu_secs >= 0.0);
    }
}
