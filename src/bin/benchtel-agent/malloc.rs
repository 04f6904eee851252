//! glibc malloc settings for a small process that runs for months.
//!
//! glibc gives every thread that allocates an arena of its own, up to eight
//! per core. The agent has about fifteen threads (host collectors, the
//! SDK's exporters, the blocking pool that runs file checks and outbox
//! reads), each allocating a little now and then: every arena keeps its
//! own free pages resident, 1.4 MiB in all on a bench with 60 checks
//! (BENCHMARKS.md, "Health checks and serial probes"). Nothing here
//! allocates often enough for lock contention on one arena to matter.
//!
//! glibc also raises its mmap threshold to the largest block freed so far,
//! so after the first export batch (up to `otlp.max_request_bytes`) such
//! batches come from the heap, and their pages stay resident between
//! exports. A fixed threshold keeps big, short-lived buffers in mappings of
//! their own that go back to the kernel when freed.

/// One arena for all threads.
const ARENAS: libc::c_int = 1;
/// glibc's default threshold, fixed: blocks of 128 KiB and more are mapped.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the settings; call it first, before any thread starts. A
/// setting that glibc refuses leaves its default, which is only larger.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists, and with options glibc documents.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
