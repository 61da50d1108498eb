//! Giving memory back. Converging thousands of namespaces allocates and frees far more than the
//! caches keep: every write's response and every watch event is decoded whole, then dropped.
//! glibc's allocator keeps freed memory in per-thread arenas, spread between the small entries
//! the caches do keep, so the process's RSS stays near its peak long after. Two settings bound
//! that: at most two arenas (the runtime has two worker threads here; `MALLOC_ARENA_MAX`, when
//! set, wins), and freed pages returned to the kernel (`malloc_trim`) a few seconds after the
//! status writer's last pass. Elsewhere than glibc both are no-ops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a status pass the free pages are returned (passes in between share one trim).
const TRIM_AFTER: Duration = Duration::from_secs(5);

/// Caps the allocator's arenas. Called before any thread is started.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a tuning parameter; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Returns the allocator's free pages to the kernel.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory no allocation holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Schedules one trim [`TRIM_AFTER`] from now, unless one is already scheduled.
#[derive(Clone, Default)]
pub struct Trimmer {
    scheduled: Arc<AtomicBool>,
}

impl Trimmer {
    pub fn soon(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let scheduled = self.scheduled.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRIM_AFTER).await;
            scheduled.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(trim).await;
        });
    }
}
