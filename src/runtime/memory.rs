//! Giving memory back. Converging thousands of namespaces allocates and frees far more than the
//! caches keep: every write's response and every watch event is decoded whole, then dropped.
//! glibc's allocator keeps freed memory in per-thread arenas, spread between the small entries
//! the caches do keep, so the process's RSS stays near its peak long after. Three settings bound
//! that: at most two arenas (the runtime has two worker threads here), a fixed mmap threshold
//! (see [`limit_arenas`]), and freed pages returned to the kernel (`malloc_trim`) a few seconds
//! after the status writer's last pass. Elsewhere than glibc they are no-ops. Measured at 10,000
//! namespaces (BENCHMARKS.md): without the trim RSS was 63–66 MiB, with it 61.8–65.2, with the
//! fixed threshold as well 60.6–61.9.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a status pass the free pages are returned (passes in between share one trim).
const TRIM_AFTER: Duration = Duration::from_secs(5);

/// Blocks of this size and larger are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Caps the allocator's arenas and fixes its mmap threshold. Called before any thread is started.
///
/// glibc raises the mmap threshold each time a mapped block is freed (up to 32 MiB), after which
/// the large transient buffers (a page of a list, a watch event's body) come from the heap and
/// leave it fragmented when dropped. Setting the threshold (to its initial 128 KiB) keeps it
/// there. `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_`, when set, win.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only changes a tuning parameter; called before other threads exist.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
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
