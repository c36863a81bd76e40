//! Shared memory for screencopy buffers: one sealed memfd per buffer, mapped read-only.
//!
//! Why not a crate: the toolkit's `RawPool`/`SlotPool` own their mapping and hand out slices
//! only through `&mut self` on the thread that owns the pool, but here the Wayland queue runs on
//! one thread and the pixels are read on another (the encode thread, without copying). Other
//! shm helpers either do the same or wrap the whole pool. What is needed is small: a file the
//! compositor can map, its size fixed, and a read-only view of it that can be shared between
//! threads. That is this module, and the only place in the crate with `unsafe`.
//!
//! The contract that makes reading sound (the screencopy source keeps it): the compositor
//! writes a buffer only between the source's `copy` request and the compositor's `ready` or
//! `failed` event for it; the consumer reads only a buffer handed to it after `ready`, and the
//! source does not submit that buffer again until the consumer gives it back.

use memmap2::{Mmap, MmapOptions};
use rustix::fs::{MemfdFlags, SealFlags};
use std::io;
use std::os::fd::OwnedFd;

/// A read-only mapping of one buffer's memfd.
#[derive(Debug)]
pub(super) struct Mapping {
    map: Mmap,
}

impl Mapping {
    /// The buffer's bytes. Valid to read while the buffer is not being copied into (see the
    /// module's contract).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// Creates a memfd of `len` bytes (sealed against shrinking) and maps it; returns the file, to
/// hand to the compositor, and the mapping.
pub(super) fn create(len: usize) -> io::Result<(OwnedFd, Mapping)> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a zero-sized buffer",
        ));
    }
    let fd = rustix::fs::memfd_create(
        "punktfunk-screencopy",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    // After this nobody (neither we nor the compositor, which gets a copy of the fd) can make
    // the file smaller than the mapping, so reading the mapping cannot fault.
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL)?;
    // SAFETY: the file is a memfd created above, so no other process had it before; it is
    // `len` bytes long (ftruncate) and sealed against shrinking, so the whole mapping stays
    // backed for its lifetime. Its contents change only when the compositor copies a frame
    // into it, which the screencopy source allows only while the consumer holds no reference
    // to this buffer (the module's contract).
    let map = unsafe { MmapOptions::new().len(len).map(&fd)? };
    Ok((fd, Mapping { map }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_sized_sealed_and_reads_what_the_file_holds() {
        let (fd, map) = create(4096).unwrap();
        assert_eq!(map.bytes().len(), 4096);
        assert!(map.bytes().iter().all(|&b| b == 0));
        rustix::io::write(&fd, b"bgrx").unwrap();
        assert_eq!(&map.bytes()[..4], b"bgrx");
        // Sealed: it cannot shrink under the mapping.
        assert!(rustix::fs::ftruncate(&fd, 16).is_err());
        assert!(create(0).is_err());
    }
}
