//! RLIMIT_NOFILE: raised to what C connections need, or a clear error.

/// Descriptors beyond the connections: stdio, epoll instances, wakers, the binary.
const SPARE_FDS: u64 = 64;

pub fn ensure_nofile(connections: usize) -> Result<(), String> {
    let need = connections as u64 + SPARE_FDS;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    // Raise the soft limit; the hard limit too if we may (root / CAP_SYS_RESOURCE).
    let want = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max.max(need),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(());
    }
    Err(format!(
        "{connections} connections need {need} file descriptors but RLIMIT_NOFILE is {} (hard {}) \
         and cannot be raised: {}; run `ulimit -n {need}` first",
        lim.rlim_cur,
        lim.rlim_max,
        std::io::Error::last_os_error()
    ))
}
