//! The `nccl` backend on a machine without NCCL (CI, laptops): bootstrap must return a clear
//! "NCCL library not found" error on every rank, before touching the network, and never panic
//! (cudarc's dynamic loading panics at first use of a missing library). On a GPU host with NCCL
//! the tests are recorded skips of category `gpu` (see uqa-testkit): the GPU path is exercised
//! there by the multi-GPU examples.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uqa_comm::{Backend, BootstrapOptions, RankEnv, bootstrap};

fn opts() -> BootstrapOptions {
    BootstrapOptions {
        backend: Backend::Nccl,
        timeout: Duration::from_secs(5),
    }
}

/// The error bootstrap gives (the result must be an error here; a panic fails the test).
fn nccl_error(env: &RankEnv) -> Option<String> {
    match bootstrap(env, &opts()) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(any(feature = "nccl", feature = "nccl-gpu"))]
fn nccl_present() -> bool {
    uqa_comm::nccl::libraries_present().is_ok()
}

#[test]
fn nccl_without_library_is_a_clear_error_not_a_panic() {
    #[cfg(any(feature = "nccl", feature = "nccl-gpu"))]
    if nccl_present() {
        let reason = "NCCL and the CUDA driver are present on this host (this test needs neither)";
        return uqa_testkit::skip(
            uqa_testkit::Category::Gpu,
            "nccl_without_library_is_a_clear_error_not_a_panic",
            reason,
        );
    }
    let msg = nccl_error(&RankEnv::single()).expect("bootstrap must fail without NCCL");
    if cfg!(any(feature = "nccl", feature = "nccl-gpu")) {
        assert!(
            msg.starts_with(
                "backend nccl is not available: NCCL library not found: none of [\"libnccl.so\""
            ),
            "{msg}"
        );
        assert!(msg.contains("libnccl.so symlink"), "{msg}");
    } else {
        assert_eq!(
            msg,
            "backend nccl is not available: not compiled in (build with the `nccl` feature)"
        );
    }
}

#[test]
fn nccl_error_comes_before_any_network_wait() {
    #[cfg(any(feature = "nccl", feature = "nccl-gpu"))]
    if nccl_present() {
        let reason = "NCCL and the CUDA driver are present on this host (this test needs neither)";
        return uqa_testkit::skip(
            uqa_testkit::Category::Gpu,
            "nccl_error_comes_before_any_network_wait",
            reason,
        );
    }
    // Rank 1 of 2 with nobody hosting the store: a network attempt would wait 5 s, the library
    // check answers at once.
    let vars: HashMap<String, String> = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "9"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let env = RankEnv::from_map(&vars).unwrap();
    let start = Instant::now();
    let msg = nccl_error(&env).expect("bootstrap must fail without NCCL");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(msg.contains("nccl"), "{msg}");
    assert!(!msg.contains("unreachable"), "{msg}");
}
