//! I/O completion ports as kernel objects of sync.rs's table: a queue of
//! packets that PostQueuedCompletionStatus adds and
//! GetQueuedCompletionStatus(Ex) takes, waiting with a timeout. Go's
//! netpoller is one port: it posts to wake a poller and waits with the
//! timer's delay. Associating a file succeeds but urun's I/O is
//! synchronous, so no completion packet is ever queued for a file.

use std::collections::VecDeque;

use super::abi::{Call, Res};
use super::kernel32::{set_error, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER};
use super::sync::{create, timeout_of, Kind};

/// GetLastError after a wait that timed out (WAIT_TIMEOUT).
const ERROR_WAIT_TIMEOUT: u32 = 258;
/// INVALID_HANDLE_VALUE: CreateIoCompletionPort's "no file".
const INVALID_HANDLE_VALUE: u64 = u64::MAX;
/// sizeof(OVERLAPPED_ENTRY): key, overlapped, internal, bytes (+ padding).
const ENTRY_SIZE: u64 = 32;

/// One completion packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packet {
    pub key: u64,
    pub overlapped: u64,
    pub bytes: u32,
}

fn is_port(c: &Call<'_>, h: u64) -> bool {
    c.p.objects.with(h, None, |k| matches!(k, Kind::Port { .. })) == Some(true)
}

/// CreateIoCompletionPort(file, existing port, key, threads): with no file
/// a new port; with a file, the port it is associated with (a new one when
/// `existing` is NULL).
pub(crate) fn create_io_completion_port(c: &mut Call<'_>) -> Res {
    let (file, existing) = (c.arg(0)?, c.arg(1)?);
    if existing != 0 {
        if file == INVALID_HANDLE_VALUE || !is_port(c, existing) {
            set_error(c, ERROR_INVALID_PARAMETER)?;
            return Ok(0);
        }
        return Ok(existing);
    }
    create(c, Kind::Port { queue: VecDeque::new() }, None)
}

/// PostQueuedCompletionStatus(port, bytes, key, overlapped).
pub(crate) fn post_queued_completion_status(c: &mut Call<'_>) -> Res {
    let (h, bytes, key, overlapped) = (c.arg(0)?, c.arg(1)? as u32, c.arg(2)?, c.arg(3)?);
    let r = c.p.objects.with(h, None, |k| match k {
        Kind::Port { queue } => {
            queue.push_back(Packet { key, overlapped, bytes });
            true
        }
        _ => false,
    });
    if r != Some(true) {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    }
    Ok(1)
}

/// Take up to `max` packets from port `h`, waiting up to `ms`:
/// Ok(packets) (empty on timeout), Err(()) when `h` is not a port.
fn take(c: &Call<'_>, h: u64, max: usize, ms: u32) -> Result<Vec<Packet>, ()> {
    let got = c.p.objects.wait_with(h, timeout_of(ms), |k| match k {
        Kind::Port { queue } if !queue.is_empty() => {
            let n = queue.len().min(max);
            Some(Ok(queue.drain(..n).collect::<Vec<_>>()))
        }
        Kind::Port { .. } => None,
        _ => Some(Err(())),
    })?;
    got.unwrap_or(Ok(Vec::new()))
}

/// GetQueuedCompletionStatus(port, *bytes, *key, *overlapped, ms).
pub(crate) fn get_queued_completion_status(c: &mut Call<'_>) -> Res {
    let (h, bytes_p, key_p, ov_p, ms) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?, c.arg(4)? as u32);
    match take(c, h, 1, ms) {
        Err(()) => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            Ok(0)
        }
        Ok(v) => match v.first() {
            None => {
                c.put_u64(ov_p, 0)?;
                set_error(c, ERROR_WAIT_TIMEOUT)?;
                Ok(0)
            }
            Some(p) => {
                c.put_u32(bytes_p, p.bytes)?;
                c.put_u64(key_p, p.key)?;
                c.put_u64(ov_p, p.overlapped)?;
                Ok(1)
            }
        },
    }
}

/// GetQueuedCompletionStatusEx(port, entries, count, *removed, ms,
/// alertable): fills OVERLAPPED_ENTRY records.
pub(crate) fn get_queued_completion_status_ex(c: &mut Call<'_>) -> Res {
    let (h, entries, count, removed, ms) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32, c.arg(3)?, c.arg(4)? as u32);
    if count == 0 {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    // Check the whole array before taking packets that could not be stored.
    c.read(entries, (u64::from(count) * ENTRY_SIZE) as usize)?;
    match take(c, h, count as usize, ms) {
        Err(()) => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            Ok(0)
        }
        Ok(v) if v.is_empty() => {
            c.put_u32(removed, 0)?;
            set_error(c, ERROR_WAIT_TIMEOUT)?;
            Ok(0)
        }
        Ok(v) => {
            for (i, p) in v.iter().enumerate() {
                let e = entries + i as u64 * ENTRY_SIZE;
                c.put_u64(e, p.key)?;
                c.put_u64(e + 8, p.overlapped)?;
                c.put_u64(e + 16, 0)?;
                c.put_u32(e + 24, p.bytes)?;
            }
            c.put_u32(removed, v.len() as u32)?;
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sync::{Kind, Objects};
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn packets_come_out_in_order_and_a_waiter_wakes_on_a_post() {
        let o = Arc::new(Objects::default());
        let Some((h, _)) = o.create(Kind::Port { queue: VecDeque::new() }, None) else { panic!("no handle") };
        let take = |o: &Objects, max: usize, ms: u64| {
            o.wait_with(h, Some(Duration::from_millis(ms)), |k| match k {
                Kind::Port { queue } if !queue.is_empty() => {
                    Some(queue.drain(..queue.len().min(max)).collect::<Vec<_>>())
                }
                _ => None,
            })
        };
        assert_eq!(take(&o, 4, 10), Ok(None));
        let poster = {
            let o = o.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                for i in 0..3 {
                    o.with(h, None, |k| {
                        if let Kind::Port { queue } = k {
                            queue.push_back(Packet { key: i, overlapped: 0, bytes: 0 })
                        }
                    });
                }
            })
        };
        let t0 = Instant::now();
        let got = take(&o, 2, 5000).ok().flatten().unwrap_or_default();
        assert!(t0.elapsed() >= Duration::from_millis(15));
        assert!(!got.is_empty() && got[0].key == 0);
        let _ = poster.join();
        assert_eq!(o.wait_with(12345, Some(Duration::ZERO), |_| Some(())), Err(()));
    }
}
