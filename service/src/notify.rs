//! systemd's notification protocol (sd_notify(3)), for a `Type=notify`
//! unit with a watchdog: `READY=1` once consuming, `WATCHDOG=1` while the
//! process makes progress, `STOPPING=1` at the shutdown. A datagram to
//! `$NOTIFY_SOCKET` (a path, or an abstract name after `@`); nothing when
//! the variable is not set (not under systemd).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` to systemd, if it listens; errors are only logged.
pub(crate) fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = socket.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &socket),
        }
    });
    if let Err(e) = sent {
        tracing::debug!("sd_notify {state}: {e}");
    }
}

/// How often to tell the watchdog that all is well: half of
/// `$WATCHDOG_USEC`, when it is set for this process.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
