//! The allocator's arenas. glibc gives each thread that contends for the allocator an arena of
//! its own (up to eight per core); memory freed in one arena serves only that arena, so transient
//! work spread over many of them (every write's response and watch event is decoded whole, then
//! dropped) leaves more of the heap resident. The operator caps them at two (the runtime has two
//! worker threads here); `MALLOC_ARENA_MAX`, when set, wins. Elsewhere than glibc this is a no-op.
//! (Returning free pages with `malloc_trim` after status passes was tried and measured: RSS did
//! not move, so it is not done.)

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
