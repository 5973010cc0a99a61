//! CPU time from `/proc` (Linux): of a whole process, and of the threads of
//! one name inside this process, so the bench can take its own load
//! generator's threads out of the embedded server's figure.

/// `/proc` counts CPU time in USER_HZ ticks, 100 a second on Linux's ABI.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `/proc/{process}/stat` (`self`, a pid, or
/// `self/task/{tid}`); `None` off Linux.
pub fn seconds(process: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // The name in parentheses may hold spaces: count fields after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), `utime` and `stime`; `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU seconds of this process's live threads named `name` (thread names
/// are cut to 15 bytes by the kernel: `name` must be that short).
pub fn threads_seconds(name: &str) -> Option<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let tid = entry.ok()?.file_name();
        let tid = tid.to_string_lossy();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok();
        if comm.as_deref().map(str::trim_end) == Some(name) {
            total += seconds(&format!("self/task/{tid}")).unwrap_or(0.0);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    /// A busy thread's CPU shows under its name, and within the process's.
    #[test]
    fn reads_this_process_and_its_named_threads() {
        let busy = std::thread::Builder::new()
            .name("cpu-test-busy".into())
            .spawn(|| {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(31).wrapping_add(1);
                    }
                    let own = super::threads_seconds("cpu-test-busy").unwrap_or(0.0);
                    if own > 0.0 || std::time::Instant::now() > deadline {
                        return (x, own, super::seconds("self").unwrap_or(0.0));
                    }
                }
            })
            .expect("a thread");
        let (_, own, process) = busy.join().expect("the thread ends");
        assert!(own > 0.0, "the busy thread's CPU is never counted");
        assert!(process >= own, "process {process} s < its thread's {own} s");
        assert_eq!(super::threads_seconds("no-such-thread"), Some(0.0));
    }
}
