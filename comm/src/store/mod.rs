//! The rendezvous store: a small TCP key-value service (like torch's TCPStore) through which ranks
//! find each other. Hosted by rank 0 or by the launcher on MASTER_ADDR:MASTER_PORT; every client
//! presents the job token on connect; every operation has a timeout; keys and values are bounded
//! ([`MAX_FRAME`](crate::MAX_FRAME), [`MAX_KEY`](crate::MAX_KEY)).
//!
//! Protocol (all frames length-prefixed): hello `"UQAS" u32:version bytes:token u32:rank`, answered
//! by `u8:status bytes:message`; then requests `u8:op ...` answered by `u8:status ...`.

mod client;
mod server;

pub use client::Store;
pub use server::StoreServer;

pub(crate) const MAGIC: &[u8; 4] = b"UQAS";
pub(crate) const VERSION: u32 = 1;

pub(crate) mod op {
    pub const SET: u8 = 1;
    pub const GET: u8 = 2;
    pub const ADD: u8 = 3;
    pub const WAIT: u8 = 4;
    pub const CHECK: u8 = 5;
    pub const DELETE: u8 = 6;
}

pub(crate) mod status {
    pub const OK: u8 = 0;
    pub const TIMEOUT: u8 = 1;
    pub const ERROR: u8 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const T: Duration = Duration::from_secs(5);

    fn server() -> (StoreServer, String) {
        let s = StoreServer::bind("127.0.0.1:0", "tok", 0).unwrap();
        let addr = s.local_addr().to_string();
        (s, addr)
    }

    #[test]
    fn set_get_add_wait_check_delete() {
        let (_server, addr) = server();
        let a = Store::connect(&addr, "tok", 0, T).unwrap();
        let b = Store::connect(&addr, "tok", 1, T).unwrap();
        a.set("k", b"v").unwrap();
        assert_eq!(b.get("k", T).unwrap(), b"v");
        assert_eq!(a.add("n", 2).unwrap(), 2);
        assert_eq!(b.add("n", 5).unwrap(), 7);
        assert_eq!(a.get("n", T).unwrap(), b"7");
        assert!(b.check(&["k", "n"]).unwrap());
        assert!(!b.check(&["k", "absent"]).unwrap());
        b.wait(&["k", "n"], T).unwrap();
        a.delete("k").unwrap();
        assert!(!b.check(&["k"]).unwrap());
        // Prefixed views are disjoint namespaces on one connection.
        let p = b.with_prefix("r1/");
        p.set("k", b"w").unwrap();
        assert!(!b.check(&["k"]).unwrap());
        assert_eq!(b.get("r1/k", T).unwrap(), b"w");
    }

    #[test]
    fn get_blocks_until_set() {
        let (_server, addr) = server();
        let a = Store::connect(&addr, "tok", 0, T).unwrap();
        let addr2 = addr.clone();
        let setter = std::thread::spawn(move || {
            let b = Store::connect(&addr2, "tok", 1, T).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            b.set("late", b"x").unwrap();
        });
        assert_eq!(a.get("late", T).unwrap(), b"x");
        setter.join().unwrap();
    }

    #[test]
    fn get_and_wait_time_out_with_context() {
        let (_server, addr) = server();
        let a = Store::connect(&addr, "tok", 3, T).unwrap();
        let start = Instant::now();
        let err = a
            .get("never", Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            err.contains("rank 3") && err.contains("get(\"never\")") && err.contains(&addr),
            "{err}"
        );
        assert!(err.contains("timed out after 100ms"), "{err}");
        let err = a
            .wait(&["x"], Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wait") && err.contains("timed out"), "{err}");
    }

    #[test]
    fn wrong_token_is_rejected() {
        let (_server, addr) = server();
        let err = Store::connect(&addr, "other", 2, T)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rejected") && err.contains("token") && err.contains("rank 2"),
            "{err}"
        );
    }

    #[test]
    fn oversized_values_and_keys_are_refused() {
        let (_server, addr) = server();
        let a = Store::connect(&addr, "tok", 0, T).unwrap();
        let err = a
            .set("big", &vec![0; crate::wire::MAX_FRAME])
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds the limit"), "{err}");
        let err = a.set(&"k".repeat(2000), b"").unwrap_err().to_string();
        assert!(err.contains("exceeds the limit"), "{err}");
        // The connection is still usable afterwards.
        a.set("small", b"ok").unwrap();
    }

    #[test]
    fn port_in_use_and_unreachable_errors_name_the_address() {
        let (_server, addr) = server();
        let err = StoreServer::bind(&addr, "tok", 0).unwrap_err().to_string();
        assert!(
            err.contains(&addr) && err.contains("already in use") && err.contains("rank 0"),
            "{err}"
        );
        drop(_server);
        let start = Instant::now();
        let err = Store::connect(&addr, "tok", 1, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            err.contains(&addr) && err.contains("unreachable") && err.contains("rank 1"),
            "{err}"
        );
    }
}
