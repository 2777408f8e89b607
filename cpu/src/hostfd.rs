//! File descriptors urun opens for itself (the KVM engine's /dev/kvm, VM
//! and vCPU descriptors). They live in the guest's descriptor table, since
//! urun and the guest are one process; the personality keeps the guest
//! from closing them (a vfork child that closes every descriptor before
//! exec would otherwise pull the engine out from under itself). Engines
//! register them here; `cpu` is the crate every other one sees.

use std::sync::Mutex;

static RESERVED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn list() -> std::sync::MutexGuard<'static, Vec<i32>> {
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mark `fd` as urun's own.
pub fn reserve(fd: i32) {
    let mut l = list();
    if !l.contains(&fd) {
        l.push(fd);
    }
}

/// Is `fd` one of urun's own?
pub fn is_reserved(fd: i32) -> bool {
    list().contains(&fd)
}

/// urun's own descriptors, sorted.
pub fn reserved() -> Vec<i32> {
    let mut v = list().clone();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn reserve_and_query() {
        super::reserve(1_000_003);
        assert!(super::is_reserved(1_000_003));
        assert!(!super::is_reserved(1_000_004));
        assert!(super::reserved().contains(&1_000_003));
    }
}
