//! CPU time from /proc: the generator's own (so a reader can tell it
//! measured the server and not itself), and that of the servers it drives
//! (`--cpu-of`), taken over exactly the timed run: no setup, and only the
//! background work that happened during the run.

/// Clock ticks per second of `utime` and `stime` in `/proc/*/stat`: the
/// kernel's USER_HZ, 100 on x86 and arm (`getconf CLK_TCK`), and the value
/// this generator has always assumed for its own share.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of a `/proc/<pid>/stat` line after the command name (which
/// may hold spaces and parentheses): index 0 is the state, 2 the process
/// group, 11 and 12 utime and stime.
fn fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

fn ticks(f: &[&str], i: usize) -> f64 {
    f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
}

/// CPU seconds (user + system) this process has used.
pub fn own_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f = fields(&stat);
    (ticks(&f, 11) + ticks(&f, 12)) / TICKS_PER_SECOND
}

/// CPU seconds used so far by every live process in the process groups
/// `groups` (a server started with `setsid`: it and every thread and child
/// it has). A process that exited meanwhile takes its time with it.
pub fn groups_seconds(groups: &[i64]) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let f = fields(&stat);
        let group = f.get(2).and_then(|g| g.parse::<i64>().ok());
        if group.is_some_and(|g| groups.contains(&g)) {
            total += ticks(&f, 11) + ticks(&f, 12);
        }
    }
    total / TICKS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped() {
        let stat = "4242 (tokio (rt) worker) S 1 4200 4200 0 -1 4194304 10 0 0 0 37 5 0 0 20 0";
        let f = fields(stat);
        assert_eq!(f[0], "S");
        assert_eq!(f[2], "4200");
        assert_eq!(ticks(&f, 11) + ticks(&f, 12), 42.0);
    }

    #[test]
    fn our_own_group_is_counted_and_others_are_not() {
        // Burn some CPU so the count is above zero.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let group: i64 = fields(&stat)[2].parse().unwrap();
        let mine = groups_seconds(&[group]);
        assert!(mine >= own_seconds() * 0.99 && mine > 0.0, "{mine}");
        assert_eq!(groups_seconds(&[-7]), 0.0);
    }
}
