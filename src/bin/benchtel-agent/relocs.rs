//! Gives back the pages of the agent's relocation table once it is read.
//!
//! A position-independent executable carries a table of the addresses the
//! dynamic loader fixes up at start (`.rela.dyn`: about 20 000 entries,
//! 470 KiB, for the Rust code's vtables and string tables). The agent is
//! linked with `BIND_NOW`, so the loader reads the whole table before
//! `main` and nothing reads it again. Its pages stay mapped all the same:
//! 440 KiB of the idle agent's RSS (BENCHMARKS.md, "Footprint").
//!
//! The table lies in a read-only, file-backed mapping that was never
//! written, so dropping its pages loses nothing: were anything to read
//! them again, the kernel would bring them back from the file.

/// Drops the relocation table's whole pages from the process's memory.
/// Returns how many bytes were given back (0 when there was nothing to do
/// or the table is not where it is safe to drop).
pub fn release() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    if let Some((start, len)) = elf::table() {
        // SAFETY: `table` returns whole pages inside a read-only,
        // non-executable, file-backed segment outside RELRO: pages never
        // written, so MADV_DONTNEED only unmaps clean copies of the file.
        let done = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        return if done == 0 { len } else { 0 };
    }
    0
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod elf {
    /// `Elf64_Dyn`, which the `libc` crate does not define.
    #[repr(C)]
    struct Dyn {
        tag: i64,
        val: u64,
    }

    const DT_NULL: i64 = 0;
    const DT_RELA: i64 = 7;
    const DT_RELASZ: i64 = 8;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;

    /// The executable's segments as the loader mapped them.
    struct Image {
        base: usize,
        headers: &'static [libc::Elf64_Phdr],
    }

    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc hands a valid `dl_phdr_info`, and `data` is the
        // `Option<Image>` that `image` passes; the executable comes first and
        // its program headers stay mapped for the process's life.
        unsafe {
            let info = &*info;
            let out = &mut *data.cast::<Option<Image>>();
            *out = Some(Image {
                base: info.dlpi_addr as usize,
                headers: std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)),
            });
        }
        1 // stop: only the executable
    }

    fn image() -> Option<Image> {
        let mut out: Option<Image> = None;
        // SAFETY: `first` writes only through the pointer it is given.
        unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut out).cast()) };
        out
    }

    /// Start and length of the relocation table's whole pages, if they lie in
    /// a segment that is only readable and not in RELRO.
    pub(super) fn table() -> Option<(usize, usize)> {
        let img = image()?;
        let dynamic = img.headers.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
        let mut entry = (img.base + dynamic.p_vaddr as usize) as *const Dyn;
        let (mut rela, mut size, mut text_relocs) = (None, None, false);
        // SAFETY: PT_DYNAMIC points at the loaded dynamic section, an array
        // that ends with DT_NULL.
        unsafe {
            while (*entry).tag != DT_NULL {
                match (*entry).tag {
                    DT_RELA => rela = Some((*entry).val as usize),
                    DT_RELASZ => size = Some((*entry).val as usize),
                    // The loader wrote into read-only segments: their pages are
                    // no longer the file's.
                    DT_TEXTREL => text_relocs = true,
                    DT_FLAGS => text_relocs |= (*entry).val & DF_TEXTREL != 0,
                    _ => {}
                }
                entry = entry.add(1);
            }
        }
        // glibc rewrites the dynamic section's addresses in place when it can;
        // an unadjusted one is an offset from the load address.
        if text_relocs {
            return None;
        }
        let rela = rela?;
        let start = if rela < img.base {
            img.base + rela
        } else {
            rela
        };
        whole_pages(start, size?, &img)
    }

    fn whole_pages(start: usize, len: usize, img: &Image) -> Option<(usize, usize)> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let lo = start.checked_next_multiple_of(page)?;
        let hi = (start + len) / page * page;
        if hi <= lo {
            return None;
        }
        let span = |p: &libc::Elf64_Phdr| {
            let from = img.base + p.p_vaddr as usize;
            (from, from + p.p_memsz as usize)
        };
        let read_only = img.headers.iter().any(|p| {
            let (from, to) = span(p);
            p.p_type == libc::PT_LOAD
                && p.p_flags & (libc::PF_W | libc::PF_X) == 0
                && from <= lo
                && hi <= to
        });
        let relro = img.headers.iter().any(|p| {
            let (from, to) = span(p);
            p.p_type == libc::PT_GNU_RELRO && from < hi && lo < to
        });
        (read_only && !relro).then_some((lo, hi - lo))
    }
}

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    target_pointer_width = "64"
))]
mod tests {
    use super::elf::table;
    use super::*;

    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
    }

    /// Whether the page at `addr` is mapped into this process.
    fn present(addr: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let page = page();
        let mut map = std::fs::File::open("/proc/self/pagemap").unwrap();
        map.seek(SeekFrom::Start((addr / page * 8) as u64)).unwrap();
        let mut entry = [0u8; 8];
        map.read_exact(&mut entry).unwrap();
        u64::from_le_bytes(entry) >> 63 == 1
    }

    #[test]
    fn the_table_is_found_dropped_and_still_reads_the_same() {
        let (start, len) = table().expect("a PIE test binary has a relocation table");
        assert!(len >= page() && start % page() == 0, "{start:#x} + {len}");
        // SAFETY: `table` returned mapped, readable memory.
        let before: Vec<u8> =
            unsafe { std::slice::from_raw_parts(start as *const u8, len) }.to_vec();
        assert!(
            present(start),
            "the loader read the table, so its pages are mapped"
        );
        assert_eq!(release(), len);
        let dropped = (0..len)
            .step_by(page())
            .filter(|o| !present(start + o))
            .count();
        assert!(dropped > 0, "no page of the table was dropped");
        // SAFETY: as above; the pages come back from the file.
        let after = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        assert!(before == after, "the table read back differs");
    }
}
