//! urun-private anonymous memory outside the guest's `AddressSpace`: page
//! tables and the VM's system pages.

/// An anonymous private read-write mapping, unmapped on drop.
pub struct Mapping {
    addr: u64,
    len: usize,
}

impl Mapping {
    /// Reserve `len` bytes (rounded up to pages); pages are committed on
    /// first touch.
    pub fn new(len: usize) -> std::io::Result<Self> {
        let len = (len + 4095) & !4095;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { addr: p as u64, len })
    }

    /// Split at `at` (a multiple of 4 KiB inside the mapping): `self`
    /// keeps the part below, the part from `at` on is returned, each
    /// unmapped on its own drop.
    pub fn split_off(&mut self, at: usize) -> Mapping {
        assert!(at.is_multiple_of(4096) && at <= self.len, "split of a private mapping out of range");
        let rest = Mapping { addr: self.addr + at as u64, len: self.len - at };
        self.len = at;
        rest
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Copy `bytes` in at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "write past the end of a private mapping");
        // SAFETY: the range is inside our mapping (checked above), which
        // is readable and writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.addr as usize + offset) as *mut u8, bytes.len()) }
    }

    /// Read the u64 at `offset`.
    pub fn read_u64(&self, offset: usize) -> u64 {
        assert!(offset + 8 <= self.len && offset.is_multiple_of(8), "read past the end of a private mapping");
        // SAFETY: in bounds and aligned (checked above); the guest may
        // have written anything there, which is any u64.
        unsafe { std::ptr::read_volatile((self.addr as usize + offset) as *const u64) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping; nothing refers to it after drop.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

// SAFETY: a Mapping is plain memory owned by this value; users synchronise
// access to the contents (the VM sits behind a Mutex).
unsafe impl Send for Mapping {}
