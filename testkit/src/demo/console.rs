//! Act 6, the console: its URL and a login (the break-glass admin with the password the demo
//! generated). With `--keep` the ward stays up until Ctrl-C, and a forward from the host's
//! 127.0.0.1 into the hospital-side namespace makes the console reachable from a browser (the
//! documentation addresses stay inside the namespaces).

use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::commission::CONSOLE_ADDR;
use crate::ward::run_in;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Connects to the console from inside `srv` (bounded).
fn reach(srv: &str) -> io::Result<TcpStream> {
    let to: SocketAddr = CONSOLE_ADDR.parse().expect("literal address");
    run_in(srv, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })
}

/// Checks the console listens (bounded wait); prints its URL and login.
pub fn check(srv: &str, password: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while reach(srv).is_err() {
        if Instant::now() > deadline {
            bail!("the console does not listen on {CONSOLE_ADDR}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("\n== the console (HTTPS, the lab CA's certificate: the browser will warn)");
    println!("   https://{CONSOLE_ADDR}/ inside the hospital namespace {srv}");
    println!("   login (break-glass): admin / {password}");
    Ok(())
}

/// Copies both ways between `a` and `b` until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut b, &mut a);
    let _ = a.shutdown(std::net::Shutdown::Write);
}

/// Forwards the host's 127.0.0.1:9443 (or a free port) to the console, until Ctrl-C.
pub fn keep(srv: &str) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind("127.0.0.1:9443").or_else(|_| TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    // Safety: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    println!("\n== --keep: the ward stays up; the console from this machine's browser:");
    println!("   https://127.0.0.1:{port}/  (forwarded into {srv}); Ctrl-C ends the demo");
    while !INTERRUPTED.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let srv = srv.to_string();
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    if let Ok(upstream) = reach(&srv) {
                        splice(client, upstream);
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("\n== Ctrl-C: stopping");
    Ok(())
}
