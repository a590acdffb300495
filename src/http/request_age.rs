//! How long the request on a connection has waited for the node: the time since the kernel last
//! received data on the socket (`TCP_INFO`'s `tcpi_last_data_recv`), read when the node gets to
//! the request. A client slow to send its request does not count (the clock starts when its last
//! bytes arrive), nor does a kept-alive connection's idle time before it; what remains is the
//! node's own queueing: a worker behind on a reconnect storm.
//!
//! Linux only (the platform Natter is built and run on); elsewhere the age is unknown and
//! admission does not bound it.

use std::time::Duration;

/// The age of the newest bytes received on `socket`, if the platform tells.
#[cfg(target_os = "linux")]
pub fn request_age(socket: &impl std::os::fd::AsRawFd) -> Option<Duration> {
    // SAFETY: `info` is a plain-data struct of the size passed in `len`, zero-initialised, that
    // getsockopt fills at most `len` bytes of; the descriptor is borrowed from a live socket for
    // the duration of the call.
    let (info, ok) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast::<libc::c_void>(),
            &mut len,
        );
        (info, rc == 0)
    };
    ok.then(|| Duration::from_millis(u64::from(info.tcpi_last_data_recv)))
}

#[cfg(not(target_os = "linux"))]
pub fn request_age<T>(_socket: &T) -> Option<Duration> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn the_age_counts_from_the_last_bytes_received_not_from_the_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        client.write_all(b"GET /ws HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let age = request_age(&server).unwrap();
        // The kernel's clock is in jiffies (1-10 ms): bounds with that slack.
        assert!(age >= Duration::from_millis(150) && age < Duration::from_millis(290), "{age:?}");
    }
}
